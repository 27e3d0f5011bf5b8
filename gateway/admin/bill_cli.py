"""`tiergate bill invoice|export`: a tenant's invoice for a month, and a month's ledger rows as csv, jsonl,
OpenMeter CloudEvents or Stripe meter events, read from the configured database's ledger."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.accounting.bookkeeper import ledger_migrations
from gateway.admin.backend import AdminError
from gateway.admin.statements import FORMATS, export, invoice, invoice_json, period_bounds
from gateway.database import open_database
from gateway.refusals import Refusal
from gateway.settings import config_path_from_environment, load_settings
from gateway.terminal import Column, print_json, print_table, progress_bars
from pricing import ExportTally, Ledger, format_micros, load_price_book

__all__ = ["add_bill_commands", "run_bill_command"]


def add_bill_commands(commands: Any) -> None:
    bill = commands.add_parser("bill", help="invoices and billing exports from the ledger").add_subparsers(
        dest="action", required=True
    )
    invoice = bill.add_parser("invoice", help="a tenant's invoice for a month")
    invoice.add_argument("--tenant", required=True)
    invoice.add_argument("--period", help="YYYY-MM; default: this month (UTC)")
    invoice.add_argument("--config", type=Path, default=config_path_from_environment())
    invoice.add_argument("--json", action="store_true", help="print JSON")
    export = bill.add_parser("export", help="a month's ledger rows as csv, jsonl, cloudevents or stripe")
    export.add_argument("--format", choices=sorted(FORMATS), default="jsonl")
    export.add_argument("--period", help="YYYY-MM; default: this month (UTC)")
    export.add_argument("--tenant", help="default: every tenant")
    export.add_argument("--config", type=Path, default=config_path_from_environment())
    export.add_argument("--output", type=Path, help="default: standard output")


def run_bill_command(args: argparse.Namespace) -> None:
    try:
        asyncio.run(_bill(args))
    except AdminError as exc:
        sys.exit(f"tiergate bill {args.action}: {exc}")


async def _bill(args: argparse.Namespace) -> None:
    if args.config is None:
        raise AdminError(
            "give --config FILE: its database holds the ledger and its pricing.book the currency"
        )
    settings = load_settings(args.config)
    if settings.pricing.book is None:
        raise AdminError("the config has no pricing.book: nothing is billed")
    currency = load_price_book(settings.pricing.book).currency
    try:
        start, end = period_bounds(args.period)
    except Refusal as exc:
        raise AdminError(exc.message) from None
    database = await open_database(settings.database.url)
    try:
        await database.migrate("ledger", ledger_migrations())
        ledger = Ledger(database)
        if args.action == "invoice":
            with progress_bars() as bars:
                count = await _row_count(ledger, args.tenant, start, end) if bars.shown else None
                on_row = bars.advancer(f"invoice {args.tenant}", count)
                bill = invoice_json(await invoice(ledger, args.tenant, currency, start, end, on_row))
            if args.json:
                print_json(bill)
            else:
                _show_invoice(bill)
            return
        tally = ExportTally()
        # no bar on the terminal the export itself is written to
        show = sys.stderr.isatty() and (args.output is not None or not sys.stdout.isatty())
        with progress_bars(show=show) as bars:
            count = await _row_count(ledger, args.tenant, start, end) if bars.shown else None
            on_row = bars.advancer(f"export {args.format}", count)
            await _export(ledger, args, start, end, settings.pricing.stripe_customers, tally, on_row)
    finally:
        await database.aclose()
    _export_summary(args, tally, currency, settings.pricing.stripe_customers)


async def _row_count(ledger: Ledger, tenant: str | None, start: datetime, end: datetime) -> int:
    return sum(total.requests for total in await ledger.totals(tenant, start, end))


async def _export(
    ledger: Ledger,
    args: argparse.Namespace,
    start: datetime,
    end: datetime,
    customers: Mapping[str, str],
    tally: ExportTally,
    on_row: Callable[[], None],
) -> None:
    out = args.output.open("wb") if args.output else sys.stdout.buffer
    try:
        chunks = export(ledger, args.format, args.tenant, start, end, customers, tally=tally, on_row=on_row)
        async for chunk in chunks:
            out.write(chunk)
    finally:
        if args.output:
            out.close()
        else:
            out.flush()


def _export_summary(
    args: argparse.Namespace, tally: ExportTally, currency: str, customers: Mapping[str, str]
) -> None:
    """One line on stderr: what was written and what was skipped, and why; exit 1 when all was skipped."""
    why = ""
    if tally.skipped_rows:
        if args.format == "stripe":
            why = (
                "pricing.stripe_customers is not set in the config"
                if not customers
                else "their tenant is not in pricing.stripe_customers, or they cost nothing"
            )
        else:
            why = "they have no tenant"
    if tally.rows == 0 and tally.skipped_rows:
        if args.output:
            args.output.unlink(missing_ok=True)
        sys.exit(
            f"tiergate bill export: nothing written, all {tally.skipped_rows} rows skipped"
            f" ({format_micros(tally.skipped_micros)} {currency}): {why}"
        )
    skipped = f"{tally.skipped_rows} rows skipped"
    if tally.skipped_rows:
        skipped += f" ({format_micros(tally.skipped_micros)} {currency}: {why})"
    where = f" to {args.output}" if args.output else ""
    print(
        f"tiergate bill export: {tally.rows} rows written{where}, total"
        f" {format_micros(tally.exported_micros)} {currency}; {skipped}",
        file=sys.stderr,
    )


INVOICE_COLUMNS = ("tier", "model", "kind", Column("quantity", numeric=True), Column("amount", numeric=True))


def _show_invoice(bill: dict[str, Any]) -> None:
    print(f"invoice for {bill['tenant']}, {bill['period']['start'][:7]}: {bill['requests']} requests")
    print_table(
        INVOICE_COLUMNS,
        (
            [line["tier"], line["model"], line["kind"], line["quantity"], line["amount"]]
            for line in bill["lines"]
        ),
    )
    print(f"total {bill['total']} {bill['currency']}")
