"""Exports of ledger rows: CSV, JSON lines, OpenMeter CloudEvents and Stripe meter events.

Each is a generator over an iterable of `LedgerRow`s that yields one piece per row (or per charge line) and
keeps nothing, so an export of a month streams from the ledger query to the socket or file in constant
memory. Amounts are the charges' integer micros: as decimal strings in currency units ("0.001234") or as
integers named `*_micros`; never floats, never rounded again. For the same rows, the exported amounts (plus
those of skipped rows, see `ExportTally`) sum to the invoice total and to the sum of the charges.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from pricing._decode import format_utc
from pricing.charges import TOKEN_KINDS, Charge
from pricing.money import format_micros
from pricing.records import LedgerRow

__all__ = [
    "CSV_COLUMNS",
    "OPENMETER_CONTENT_TYPE",
    "STRIPE_DEFAULT_EVENT_NAME",
    "ExportTally",
    "csv_export",
    "jsonl_export",
    "openmeter_batch",
    "openmeter_events",
    "stripe_meter_events",
    "stripe_meter_lines",
]

CSV_COLUMNS = (
    "request_id", "tenant", "key_id", "tier", "rated_tier", "model", "endpoint", "outcome", "streamed",
    "estimated", "started_at", "price_version", "currency", "kind", "quantity", "unit_price", "amount",
    "cascade_escalated",
)  # fmt: skip
OPENMETER_CONTENT_TYPE = "application/cloudevents-batch+json"
STRIPE_DEFAULT_EVENT_NAME = "tiergate_cost_micros"
_STRIPE_MAX_VALUE = 10**15 - 1  # Stripe: an integer of at most 15 significant digits
_STRIPE_MAX_IDENTIFIER = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class ExportTally:
    """Filled in as an export runs (pass one in to read it afterwards). Exported + skipped = all rows."""

    rows: int = 0
    exported_micros: int = 0
    skipped_rows: int = 0  # rows the target cannot take (no tenant, no customer mapping, nothing to bill)
    skipped_micros: int = 0

    def _export(self, charge: Charge) -> None:
        self.rows += 1
        self.exported_micros += charge.total

    def _skip(self, charge: Charge) -> None:
        self.skipped_rows += 1
        self.skipped_micros += charge.total


def csv_export(rows: Iterable[LedgerRow], tally: ExportTally | None = None) -> Iterator[str]:
    """The header, then one CSV line (RFC 4180, CRLF) per row and charge line; prices and amounts in units.

    Yields the header, then one piece per row holding that row's lines.
    """
    tally = ExportTally() if tally is None else tally
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    for row in rows:
        record, charge = row.record, row.charge
        head = (
            record.request_id, record.tenant or "", record.key_id or "", record.tier, charge.rated_tier,
            record.model, record.endpoint, record.outcome, "true" if record.streamed else "false",
            "true" if record.estimated else "false", format_utc(record.started_at), charge.price_version,
            charge.currency,
        )  # fmt: skip
        # empty for every tier but the cascade's
        escalated = "" if record.cascade is None else "true" if record.cascade.escalated else "false"
        writer.writerows(
            (
                *head,
                line.kind,
                line.quantity,
                format_micros(line.unit_price),
                format_micros(line.amount),
                escalated,
            )
            for line in charge.lines
        )
        tally._export(charge)
        yield flush()


def _charge_export(charge: Charge) -> dict[str, object]:
    return {
        "currency": charge.currency,
        "price_version": charge.price_version,
        "rated_tier": charge.rated_tier,
        "total": format_micros(charge.total),
        "total_micros": charge.total,
        "lines": [
            {
                "kind": line.kind,
                "quantity": line.quantity,
                "unit_price": format_micros(line.unit_price),
                "amount": format_micros(line.amount),
                "amount_micros": line.amount,
            }
            for line in charge.lines
        ],
    }


def jsonl_export(rows: Iterable[LedgerRow], tally: ExportTally | None = None) -> Iterator[bytes]:
    """One JSON line per row: {"record": <UsageRecord.to_dict()>, "charge": {..., "lines": [...]}}."""
    tally = ExportTally() if tally is None else tally
    for row in rows:
        yield orjson.dumps({"record": row.record.to_dict(), "charge": _charge_export(row.charge)}) + b"\n"
        tally._export(row.charge)


def openmeter_events(
    rows: Iterable[LedgerRow], tally: ExportTally | None = None
) -> Iterator[dict[str, object]]:
    """CloudEvents 1.0 for OpenMeter, one per charge line; rows without a tenant (no subject) are skipped.

    `type` is "tokens" for token lines (data.tokens) and "request" for fee lines; every event carries its
    amount (data.amount_micros, exact, and data.amount in units) so a meter can sum money as well as tokens.
    `id` is "<request_id>:<kind>": OpenMeter deduplicates on (source, id), so re-sending an export is
    harmless.
    """
    tally = ExportTally() if tally is None else tally
    for row in rows:
        record, charge = row.record, row.charge
        if record.tenant is None:
            tally._skip(charge)
            continue
        time = format_utc(record.started_at)
        seen: set[str] = set()
        for line in charge.lines:
            # an escalated cascade's deliberate stage repeats kinds: its ids say so, or they would dedupe
            name = f"deliberate:{line.kind}" if line.kind in seen else line.kind
            seen.add(line.kind)
            is_tokens = line.kind in TOKEN_KINDS
            data: dict[str, object] = {"tokens": line.quantity} if is_tokens else {}
            data.update(
                amount=format_micros(line.amount),
                amount_micros=line.amount,
                currency=charge.currency,
                model=record.model,
                tier=record.tier,
                rated_tier=charge.rated_tier,
                type=line.kind,
            )
            if record.cascade is not None:
                data["cascade_escalated"] = record.cascade.escalated
            yield {
                "specversion": "1.0",
                "type": "tokens" if is_tokens else "request",
                "id": f"{record.request_id}:{name}",
                "time": time,
                "source": "tiergate",
                "subject": record.tenant,
                "data": data,
            }
        tally._export(charge)


def openmeter_batch(rows: Iterable[LedgerRow], tally: ExportTally | None = None) -> Iterator[bytes]:
    """An `application/cloudevents-batch+json` body (a JSON array), yielded one event at a time."""
    separator = b"["
    for event in openmeter_events(rows, tally):
        yield separator + orjson.dumps(event)
        separator = b","
    yield b"[]" if separator == b"[" else b"]"


def _stripe_identifier(request_id: str) -> str:
    # Stripe caps identifiers at 100 characters and request ids may be longer: hash those, deterministically
    if len(request_id) <= _STRIPE_MAX_IDENTIFIER:
        return request_id
    return "sha256:" + hashlib.sha256(request_id.encode()).hexdigest()


def stripe_meter_events(
    rows: Iterable[LedgerRow],
    customers: Mapping[str, str],
    *,
    event_name: str = STRIPE_DEFAULT_EVENT_NAME,
    tally: ExportTally | None = None,
) -> Iterator[dict[str, str]]:
    """Stripe meter events (form fields, all strings), one per row: the row's total cost in micros.

    `customers` maps tenant -> Stripe customer id; rows of other tenants are skipped and counted, and so are
    rows that cost nothing (no value to meter). Stripe takes timestamps up to 35 days back and deduplicates
    identifiers over 24 hours only: send exports promptly and once.
    """
    tally = ExportTally() if tally is None else tally
    for row in rows:
        record, charge = row.record, row.charge
        customer = customers.get(record.tenant) if record.tenant is not None else None
        if customer is None or charge.total == 0:
            tally._skip(charge)
            continue
        if charge.total > _STRIPE_MAX_VALUE:
            raise ValueError(f"{record.request_id}: {charge.total} micros exceeds Stripe's 15 digits")
        yield {
            "event_name": event_name,
            "payload[stripe_customer_id]": customer,
            "payload[value]": str(charge.total),
            "identifier": _stripe_identifier(record.request_id),
            "timestamp": str((record.started_at - _EPOCH) // timedelta(seconds=1)),
        }
        tally._export(charge)


def stripe_meter_lines(
    rows: Iterable[LedgerRow],
    customers: Mapping[str, str],
    *,
    event_name: str = STRIPE_DEFAULT_EVENT_NAME,
    tally: ExportTally | None = None,
) -> Iterator[bytes]:
    """`stripe_meter_events` as JSON lines, one form-encodable object per line."""
    for event in stripe_meter_events(rows, customers, event_name=event_name, tally=tally):
        yield orjson.dumps(event) + b"\n"
