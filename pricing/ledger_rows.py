"""A ledger row and its columns, both ways: the values one row stores (refusing what no database could
hold), the row one stored set of values is, and whether a stored row holds exactly what is offered again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from pricing.charges import Charge, ChargeLine
from pricing.records import Cascade, Depth, LedgerRow, UsageRecord

__all__ = ["check_storable", "ledger_row", "row_values", "same_row"]

_BIGINT = 2**63 - 1


def check_storable(row: LedgerRow) -> None:
    """ValueError when no database could ever store the row. The journal calls it before appending: a row
    the database refuses would otherwise be retried forever, holding up every row behind it."""
    for column, value in row_values(row).items():
        if isinstance(value, str) and "\x00" in value:  # PostgreSQL text cannot hold NUL
            raise ValueError(f"{row.record.request_id}: {column} contains a NUL character")
        if isinstance(value, int) and not -_BIGINT - 1 <= value <= _BIGINT:
            raise ValueError(f"{row.record.request_id}: {column} {value} does not fit in 64 bits")


def row_values(row: LedgerRow) -> dict[str, Any]:
    """The row's columns by name, in _COLUMNS order."""
    record, charge, depth = row.record, row.charge, row.record.depth
    if isinstance(charge.total, bool) or not isinstance(charge.total, int):
        # PostgreSQL would round a float into BIGINT without a word: refuse it here instead
        raise ValueError(f"{record.request_id}: charge total {charge.total!r} is not integer micros")
    return {
        "request_id": record.request_id,
        "tenant": record.tenant,
        "key_id": record.key_id,
        "tier": record.tier,
        "model": record.model,
        "served_model": record.served_model,
        "replica": record.replica,
        "endpoint": record.endpoint,
        "prompt_tokens": record.prompt_tokens,
        "cached_tokens": record.cached_tokens,
        "completion_tokens": record.completion_tokens,
        "reasoning_tokens": record.reasoning_tokens,
        "estimated": record.estimated,
        "depth_samples": depth.samples,
        "depth_extensions": depth.extensions,
        "depth_floor": depth.floor,
        "depth_floor_met": depth.floor_met,
        "depth_agreement": depth.agreement,
        "outcome": record.outcome,
        "streamed": record.streamed,
        "started_at": record.started_at,
        "first_token_at": record.first_token_at,
        "ended_at": record.ended_at,
        "currency": charge.currency,
        "price_version": charge.price_version,
        "rated_tier": charge.rated_tier,
        "total_micros": charge.total,
        "lines": orjson.dumps([line.to_dict() for line in charge.lines]).decode(),
        "depth_shortfall": ",".join(depth.shortfall) or None,
        "cascade": None if record.cascade is None else orjson.dumps(record.cascade.to_dict()).decode(),
        "priority_class": None if record.priority_class == "standard" else record.priority_class,
    }


_TIMES = frozenset({"started_at", "first_token_at", "ended_at"})
_FLAGS = frozenset({"estimated", "streamed", "depth_floor_met"})


def same_row(stored: dict[str, Any], offered: dict[str, Any]) -> bool:
    """Whether a stored row holds exactly the offered values, whichever way the dialect returns them."""
    for column, value in offered.items():
        found = stored[column]
        if found is None or value is None:
            if found is not value:
                return False
        elif column in _TIMES:
            if _timestamp(found) != value:  # instants: equal whatever their time zone
                return False
        elif column in _FLAGS:
            if bool(found) != value:  # SQLite stores booleans as 0/1
                return False
        elif found != value:
            return False
    return True


def ledger_row(row: dict[str, Any]) -> LedgerRow:
    record = UsageRecord(
        request_id=row["request_id"],
        tenant=row["tenant"],
        key_id=row["key_id"],
        tier=row["tier"],
        model=row["model"],
        served_model=row["served_model"],
        replica=row["replica"],
        endpoint=row["endpoint"],
        prompt_tokens=row["prompt_tokens"],
        cached_tokens=row["cached_tokens"],
        completion_tokens=row["completion_tokens"],
        reasoning_tokens=row["reasoning_tokens"],
        estimated=bool(row["estimated"]),  # SQLite stores booleans as 0/1
        depth=Depth(
            samples=row["depth_samples"],
            extensions=row["depth_extensions"],
            floor=row["depth_floor"],
            floor_met=None if row["depth_floor_met"] is None else bool(row["depth_floor_met"]),
            agreement=row["depth_agreement"],
            shortfall=tuple(row["depth_shortfall"].split(",")) if row["depth_shortfall"] else (),
        ),
        outcome=row["outcome"],
        streamed=bool(row["streamed"]),
        started_at=_timestamp(row["started_at"]),
        first_token_at=None if row["first_token_at"] is None else _timestamp(row["first_token_at"]),
        ended_at=_timestamp(row["ended_at"]),
        cascade=None if row["cascade"] is None else Cascade.from_dict(orjson.loads(row["cascade"])),
        priority_class=row["priority_class"] or "standard",
    )
    charge = Charge(
        request_id=row["request_id"],
        currency=row["currency"],
        price_version=row["price_version"],
        rated_tier=row["rated_tier"],
        lines=tuple(ChargeLine.from_dict(line) for line in orjson.loads(row["lines"])),
        total=row["total_micros"],
    )
    return LedgerRow(record, charge)


def _timestamp(value: datetime | str) -> datetime:
    # PostgreSQL returns timestamptz as an aware datetime; SQLite returns the ISO-8601 UTC text it was given
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        raise ValueError(f"ledger timestamp {moment.isoformat()} has no time zone")
    return moment.astimezone(UTC)
