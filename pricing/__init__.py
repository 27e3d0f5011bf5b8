"""Money: price books, rating of usage records into charge lines, the ledger and exports.

Knows nothing of HTTP or engines: the gateway turns each request into a `UsageRecord` (plain values), `rate`
prices it against the versioned `PriceBook` into a `Charge` of integer micros, and the pair, a `LedgerRow`,
is what the ledger stores and what invoices and exports are built from. See docs/pricing.md.
"""

from pricing._exceptions import CoverageError, NotPriced, PriceBookError, PricingError
from pricing.book import PriceBook, load_price_book
from pricing.charges import Charge, ChargeKind, ChargeLine
from pricing.exports import (
    OPENMETER_CONTENT_TYPE,
    ExportTally,
    csv_export,
    jsonl_export,
    openmeter_batch,
    openmeter_events,
    stripe_meter_events,
    stripe_meter_lines,
)
from pricing.invoice import Invoice, InvoiceBuilder, InvoiceLine, build_invoice
from pricing.journal import Journal, JournalError
from pricing.journal_drain import LedgerWriter
from pricing.ledger import LEDGER_MIGRATIONS, Ledger, LedgerTotal
from pricing.money import MAX_MICROS, Micros, format_micros, line_amount, micros_to_decimal, parse_money
from pricing.prices import Price, PriceVersion
from pricing.rating import cascade_stages, rate, usage_cost_fields, worst_case
from pricing.records import PRIORITY_CLASSES, SHORTFALLS, Cascade, Depth, LedgerRow, UsageRecord

__all__ = [
    "LEDGER_MIGRATIONS",
    "MAX_MICROS",
    "OPENMETER_CONTENT_TYPE",
    "PRIORITY_CLASSES",
    "SHORTFALLS",
    "Cascade",
    "Charge",
    "ChargeKind",
    "ChargeLine",
    "CoverageError",
    "Depth",
    "ExportTally",
    "Invoice",
    "InvoiceBuilder",
    "InvoiceLine",
    "Journal",
    "JournalError",
    "Ledger",
    "LedgerRow",
    "LedgerTotal",
    "LedgerWriter",
    "Micros",
    "NotPriced",
    "Price",
    "PriceBook",
    "PriceBookError",
    "PriceVersion",
    "PricingError",
    "UsageRecord",
    "build_invoice",
    "cascade_stages",
    "csv_export",
    "format_micros",
    "jsonl_export",
    "line_amount",
    "load_price_book",
    "micros_to_decimal",
    "openmeter_batch",
    "openmeter_events",
    "parse_money",
    "rate",
    "stripe_meter_events",
    "stripe_meter_lines",
    "usage_cost_fields",
    "worst_case",
]
