"""Ledger batches reach SQLite in a handful of statement shapes, however their sizes vary: a shape per batch
size filled SQLite's statement cache with large prepared statements, memory that grew with every request."""

from __future__ import annotations

from typing import Any

from pricing.ledger import ROWS_PER_STATEMENT, _chunks


def test_every_batch_size_uses_a_few_statement_shapes_and_keeps_every_row() -> None:
    shapes: set[int] = set()
    for size in range(1, 2 * ROWS_PER_STATEMENT + 37):
        values: list[dict[str, Any]] = [{"n": index} for index in range(size)]
        chunks = list(_chunks(values))
        assert [row for chunk in chunks for row in chunk] == values  # all of them, in order, once
        shapes.update(len(chunk) for chunk in chunks)
    assert len(shapes) <= 10
    assert max(shapes) == ROWS_PER_STATEMENT
