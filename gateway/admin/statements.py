"""Invoices and exports of the ledger, streamed: rows are read page by page from the database and the export
generators of `pricing.exports` run in a worker thread, so neither side ever holds the whole period."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import iterate_in_threadpool

from gateway.refusals import Refusal
from pricing import (
    ExportTally,
    Invoice,
    InvoiceBuilder,
    Ledger,
    LedgerRow,
    csv_export,
    format_micros,
    jsonl_export,
    openmeter_batch,
    stripe_meter_lines,
)

__all__ = ["FORMATS", "export", "invoice", "invoice_json", "period_bounds"]


def period_bounds(period: str | None, now: datetime | None = None) -> tuple[datetime, datetime]:
    """A calendar month `YYYY-MM` (default: the current one, UTC) as [start, end)."""
    now = now or datetime.now(UTC)
    try:
        year, month = (int(part) for part in period.split("-")) if period else (now.year, now.month)
        start = datetime(year, month, 1, tzinfo=UTC)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)  # 9999-12 has no end
    except ValueError:
        raise Refusal(
            "invalid",
            "period must be a month from 0001-01 to 9999-11, like 2026-11.",
            code="invalid_value",
            param="period",
        ) from None
    return start, end


Exporter = Callable[[Iterable[LedgerRow], Mapping[str, str], ExportTally], Iterator[bytes | str]]

FORMATS: Mapping[str, tuple[str, Exporter]] = {
    "csv": ("text/csv; charset=utf-8", lambda rows, _, tally: csv_export(rows, tally)),
    "jsonl": ("application/x-ndjson", lambda rows, _, tally: jsonl_export(rows, tally)),
    "cloudevents": (
        "application/cloudevents-batch+json",
        lambda rows, _, tally: openmeter_batch(rows, tally),
    ),
    "stripe": (
        "application/x-ndjson",
        lambda rows, customers, tally: stripe_meter_lines(rows, customers, tally=tally),
    ),
}


async def invoice(
    ledger: Ledger,
    tenant: str,
    currency: str,
    start: datetime,
    end: datetime,
    on_row: Callable[[], None] | None = None,
) -> Invoice:
    """The tenant's invoice for [start, end); `on_row` is called after each ledger row is added."""
    builder = InvoiceBuilder(tenant, currency, start, end)
    async for row in ledger.rows(tenant, start, end):
        builder.add(row)
        if on_row is not None:
            on_row()
    return builder.build()


def invoice_json(bill: Invoice) -> dict[str, Any]:
    return {
        "object": "invoice",
        "tenant": bill.tenant,
        "currency": bill.currency,
        "period": {"start": bill.period_start.isoformat(), "end": bill.period_end.isoformat()},
        "requests": bill.requests,
        "depth_floor_missed": bill.depth_floor_missed,
        "lines": [
            {
                "tier": line.tier,
                "model": line.model,
                "kind": line.kind,
                "quantity": line.quantity,
                "amount": format_micros(line.amount),
                "amount_micros": line.amount,
            }
            for line in bill.lines
        ],
        "subtotals_micros": dict(bill.subtotals),
        "total": format_micros(bill.total),
        "total_micros": bill.total,
    }


async def export(
    ledger: Ledger,
    fmt: str,
    tenant: str | None,
    start: datetime,
    end: datetime,
    customers: Mapping[str, str] | None = None,
    *,
    tally: ExportTally | None = None,
    on_row: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """The period's rows in `fmt` (see FORMATS), chunk by chunk. `tally`, when given, counts the rows
    exported and skipped (read it after the last chunk); `on_row` is called as each row is read."""
    _, exporter = FORMATS[fmt]
    loop = asyncio.get_running_loop()
    pages = ledger.rows(tenant, start, end)

    async def next_row() -> LedgerRow:
        row = await anext(pages)
        if on_row is not None:
            on_row()
        return row

    def rows() -> Iterator[LedgerRow]:  # runs in the worker thread: each row is fetched on the event loop
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(next_row(), loop).result()
            except StopAsyncIteration:
                return

    counted = ExportTally() if tally is None else tally
    async for chunk in iterate_in_threadpool(exporter(rows(), customers or {}, counted)):
        yield chunk.encode() if isinstance(chunk, str) else chunk
