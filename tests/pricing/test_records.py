"""Usage records and charges: validation, and the exact JSON round trip the journal relies on."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from pricing import Charge, ChargeLine, Depth, LedgerRow, UsageRecord
from pricing.records import RECORD_FORMAT
from tests.pricing.factories import JAN, make_record, make_row


def full_record() -> UsageRecord:
    return make_record(
        tier="deliberate",
        model="qwen3-32b",
        prompt_tokens=1200,
        cached_tokens=1000,
        completion_tokens=900,
        reasoning_tokens=700,
        estimated=True,
        depth=Depth(samples=5, extensions=2, floor=512, floor_met=True, agreement=0.6),
        outcome="client_disconnected",
        streamed=True,
        started_at=datetime(2026, 1, 15, 12, 0, 0, 1, tzinfo=UTC),
        first_token_at=None,
    )


def test_record_round_trips_exactly() -> None:
    record = full_record()
    data = record.to_json()
    again = UsageRecord.from_json(data)
    assert again == record
    assert again.to_json() == data
    assert UsageRecord.from_json(data.decode()) == record


def test_record_json_keys_follow_the_field_order() -> None:
    keys = list(orjson.loads(make_record().to_json()))
    fields = [field.name for field in dataclasses.fields(UsageRecord)]
    # `cascade` is written only for the cascade tier's records, `priority_class` only for premium ones
    assert keys == ["v", *fields[:-2]]
    assert fields[-2:] == ["cascade", "priority_class"]
    assert orjson.loads(make_record().to_json())["v"] == RECORD_FORMAT


def test_times_serialize_in_utc_with_microseconds() -> None:
    paris = timezone(timedelta(hours=1))
    record = make_record(started_at=datetime(2026, 1, 15, 13, 0, tzinfo=paris))
    data = orjson.loads(record.to_json())
    assert data["started_at"] == "2026-01-15T12:00:00.000000Z"
    again = UsageRecord.from_json(record.to_json())
    assert again.started_at == record.started_at  # the same instant
    assert again.started_at.utcoffset() == timedelta(0)
    assert again.to_json() == record.to_json()


def test_an_integer_agreement_keeps_one_spelling() -> None:
    record = make_record(depth=Depth(samples=3, agreement=1))
    assert isinstance(record.depth.agreement, float)
    assert UsageRecord.from_json(record.to_json()).to_json() == record.to_json()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"request_id": ""}, "request_id"),
        ({"tier": "turbo"}, "tier"),
        ({"endpoint": "embeddings"}, "endpoint"),
        ({"outcome": "maybe"}, "outcome"),
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"completion_tokens": True}, "completion_tokens"),
        ({"completion_tokens": 1.0}, "completion_tokens"),
        ({"prompt_tokens": 10, "cached_tokens": 11}, "cached_tokens 11 > prompt_tokens 10"),
        ({"completion_tokens": 10, "reasoning_tokens": 11}, "reasoning_tokens 11 > completion_tokens 10"),
        ({"started_at": datetime(2026, 1, 1)}, "started_at must be a timezone-aware"),
        ({"ended_at": "2026-01-01T00:00:00Z"}, "ended_at"),
        ({"first_token_at": datetime(2026, 1, 1)}, "first_token_at"),
        ({"depth": None}, "depth"),
    ],
)
def test_record_validation(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_record(**change)


@pytest.mark.parametrize(
    ("depth", "message"),
    [
        ({"samples": 0}, "samples"),
        ({"extensions": -1}, "extensions"),
        ({"floor": -5, "floor_met": False}, "floor"),
        ({"floor": 100}, "set together"),
        ({"floor_met": True}, "set together"),
        ({"agreement": 1.5}, "agreement"),
        ({"agreement": -0.1}, "agreement"),
        ({"floor": 5, "floor_met": True, "shortfall": ("too_shallow",)}, "shortfall"),
        ({"floor": 5, "floor_met": False, "shortfall": ("cap_ignored", "floor_missed")}, "in order"),
        ({"floor": 5, "floor_met": False, "shortfall": ("floor_missed", "floor_missed")}, "distinct"),
        ({"floor": 5, "floor_met": True, "shortfall": ["cap_ignored"]}, "shortfall"),
        ({"shortfall": ("cap_ignored",)}, "without a depth promise"),
        ({"shortfall": ("budget_ignored", "effort_ignored")}, "without a depth promise"),
        ({"floor": 5, "floor_met": True, "shortfall": ("floor_missed",)}, "floor_met True"),
    ],
)
def test_depth_validation(depth: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Depth(**depth)


def test_a_shortfall_round_trips_and_its_absence_keeps_the_old_bytes() -> None:
    found = make_record(depth=Depth(floor=5, floor_met=False, shortfall=("floor_missed", "samples_short")))
    data = orjson.loads(found.to_json())
    assert data["depth"]["shortfall"] == ["floor_missed", "samples_short"]
    assert UsageRecord.from_json(found.to_json()) == found
    # without one, no key: records written before the audit read back, and serialize as they did
    plain = make_record(depth=Depth(floor=5, floor_met=True))
    assert "shortfall" not in orjson.loads(plain.to_json())["depth"]
    assert UsageRecord.from_json(plain.to_json()) == plain


def test_a_relayed_request_without_a_promise_may_have_its_thinking_budget_ignored() -> None:
    relayed = make_record(depth=Depth(shortfall=("budget_ignored",)))
    assert UsageRecord.from_json(relayed.to_json()) == relayed


@pytest.mark.parametrize(
    ("shortfall", "message"), [([], "non-empty list"), ("cap_ignored", "non-empty list")]
)
def test_from_json_refuses_a_malformed_shortfall(shortfall: object, message: str) -> None:
    data = orjson.loads(make_record(depth=Depth(floor=5, floor_met=True)).to_json())
    data["depth"]["shortfall"] = shortfall
    with pytest.raises(ValueError, match=message):
        UsageRecord.from_json(orjson.dumps(data))


def test_times_may_be_out_of_order() -> None:
    # a wall clock stepping back mid-request must not cost the bill
    record = make_record(ended_at=JAN - timedelta(seconds=1))
    assert UsageRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda data: data.pop("tenant"), "missing keys \\['tenant'\\]"),
        (lambda data: data.update(extra=1), "unknown keys \\['extra'\\]"),
        (lambda data: data.update(v=2), "unknown usage record format 2"),
        (lambda data: data.update(prompt_tokens="12"), "prompt_tokens: expected an integer"),
        (lambda data: data.update(started_at="yesterday"), "started_at: not an RFC 3339 time"),
        (lambda data: data.update(started_at="2026-01-01T00:00:00"), "started_at: time without a UTC offset"),
        (lambda data: data["depth"].pop("floor"), "depth: missing keys"),
        (lambda data: data.update(depth=[]), "depth: expected an object"),
        (lambda data: data.update(streamed=1), "streamed: expected a boolean"),
    ],
)
def test_from_json_refuses_what_it_cannot_read(mutate: Any, message: str) -> None:
    data = orjson.loads(make_record().to_json())
    mutate(data)
    with pytest.raises(ValueError, match=message):
        UsageRecord.from_json(orjson.dumps(data))


def test_from_json_refuses_a_non_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        UsageRecord.from_json(b"[]")
    with pytest.raises(ValueError, match="JSON object"):
        Charge.from_json(b"1")


def test_charge_round_trips_exactly() -> None:
    charge = make_row(tier="deliberate", prompt_tokens=10, completion_tokens=20, reasoning_tokens=5).charge
    data = charge.to_json()
    assert Charge.from_json(data) == charge
    assert Charge.from_json(data).to_json() == data
    assert list(orjson.loads(data)) == [field.name for field in dataclasses.fields(Charge)]


def test_charge_total_must_be_the_sum_of_its_lines() -> None:
    line = ChargeLine("input", 10, 1_000_000, 10)
    with pytest.raises(ValueError, match="not the sum"):
        Charge("r", "USD", "2026-01-01", "fast", (line,), 11)
    with pytest.raises(ValueError, match="appears twice"):
        Charge("r", "USD", "2026-01-01", "fast", (line, line), 20)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bogus", 1, 1, 1), "unknown charge kind"),
        (("input", -1, 1, 1), "quantity"),
        (("input", 1, -1, 1), "unit_price"),
        (("input", 1, 1, True), "amount"),
    ],
)
def test_charge_line_validation(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChargeLine(*args)


def test_charge_line_from_dict_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind: unknown charge kind"):
        ChargeLine.from_dict({"kind": "tip", "quantity": 1, "unit_price": 1, "amount": 1})


def test_ledger_row_pairs_a_record_with_its_own_charge() -> None:
    row = make_row()
    other = make_record()
    with pytest.raises(ValueError, match="is not for record"):
        LedgerRow(other, row.charge)
