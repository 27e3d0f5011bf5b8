"""Invoices: per tier, model and kind; subtotals; exactly the sum of the charges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pricing import Depth, InvoiceBuilder, InvoiceLine, LedgerRow, build_invoice
from tests.pricing.factories import JAN, make_row

START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)


def january_rows() -> list[LedgerRow]:
    return [
        make_row(prompt_tokens=1000, cached_tokens=200, completion_tokens=300),
        make_row(prompt_tokens=500, completion_tokens=100, started_at=START),  # the first instant is in
        make_row(tier="deliberate", prompt_tokens=1000, completion_tokens=2000, reasoning_tokens=1500,
                 depth=Depth(floor=1024, floor_met=True)),
        make_row(tier="deliberate", prompt_tokens=1000, completion_tokens=2000, reasoning_tokens=1500,
                 depth=Depth(floor=1024, floor_met=False)),  # rated at fast prices
        make_row(tier="deliberate", model="qwen3-32b", prompt_tokens=10, completion_tokens=10),
    ]  # fmt: skip


def test_invoice_lines_subtotals_and_total() -> None:
    rows = january_rows()
    invoice = build_invoice(rows, "acme", "USD", START, END)
    assert invoice.lines == (
        InvoiceLine("fast", "qwen3-8b", "input", 800 + 500 + 1000, 40 + 25 + 50),
        InvoiceLine("fast", "qwen3-8b", "cached_input", 200, 2),
        InvoiceLine("fast", "qwen3-8b", "output", 300 + 100 + 500, 60 + 20 + 100),
        InvoiceLine("fast", "qwen3-8b", "reasoning", 1500, 300),
        InvoiceLine("fast", "qwen3-8b", "request", 3, 0),
        InvoiceLine("deliberate", "qwen3-32b", "input", 10, 3),
        InvoiceLine("deliberate", "qwen3-32b", "output", 10, 12),
        InvoiceLine("deliberate", "qwen3-32b", "request", 1, 200),
        InvoiceLine("deliberate", "qwen3-8b", "input", 1000, 100),
        InvoiceLine("deliberate", "qwen3-8b", "output", 500, 300),
        InvoiceLine("deliberate", "qwen3-8b", "reasoning", 1500, 900),
        InvoiceLine("deliberate", "qwen3-8b", "request", 1, 100),
        InvoiceLine("deliberate", "qwen3-8b", "depth_premium", 1, 500),
    )
    assert dict(invoice.subtotals) == {"fast": 597, "deliberate": 2115}
    assert list(invoice.subtotals) == ["fast", "deliberate"]
    assert invoice.total == 597 + 2115 == sum(row.charge.total for row in rows)
    assert (invoice.requests, invoice.depth_floor_missed) == (5, 1)


def test_invoice_does_not_depend_on_row_order() -> None:
    rows = january_rows()
    assert build_invoice(rows, "acme", "USD", START, END) == build_invoice(
        rows[::-1], "acme", "USD", START, END
    )


def test_an_empty_invoice() -> None:
    invoice = InvoiceBuilder("acme", "USD", START, END).build()
    assert (invoice.lines, dict(invoice.subtotals), invoice.total, invoice.requests) == ((), {}, 0, 0)


def test_an_invoice_for_unauthenticated_traffic() -> None:
    rows = [make_row(tenant=None, prompt_tokens=10**6)]
    assert build_invoice(rows, None, "USD", START, END).total == 50_000


MID_START, MID_END = datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 1, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (make_row(tenant="globex"), "tenant 'globex' on an invoice for 'acme'"),
        (make_row(started_at=MID_END), "outside the period"),  # the end is exclusive
        (make_row(started_at=MID_START - timedelta(microseconds=1)), "outside the period"),
    ],
)
def test_the_builder_refuses_rows_that_are_not_its_own(row: LedgerRow, message: str) -> None:
    builder = InvoiceBuilder("acme", "USD", MID_START, MID_END)
    builder.add(make_row(started_at=MID_START))  # the start is inclusive
    with pytest.raises(ValueError, match=message):
        builder.add(row)


def test_the_builder_refuses_another_currency() -> None:
    with pytest.raises(ValueError, match="charged in USD, invoice in EUR"):
        InvoiceBuilder("acme", "EUR", START, END).add(make_row())


def test_the_period_must_be_aware_and_not_empty() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        InvoiceBuilder("acme", "USD", datetime(2026, 1, 1), END)
    with pytest.raises(ValueError, match="empty invoice period"):
        InvoiceBuilder("acme", "USD", JAN, JAN)
