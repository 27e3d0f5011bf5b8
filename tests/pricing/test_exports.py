"""Exports: each format parses back, sums to the invoice, and streams without holding the rows."""

from __future__ import annotations

import csv
import inspect
import io
import itertools
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from pricing import (
    OPENMETER_CONTENT_TYPE,
    Depth,
    ExportTally,
    LedgerRow,
    build_invoice,
    csv_export,
    jsonl_export,
    micros_to_decimal,
    openmeter_batch,
    openmeter_events,
    stripe_meter_events,
    stripe_meter_lines,
)
from pricing.exports import CSV_COLUMNS
from tests.pricing.factories import JAN, make_row

CUSTOMERS = {"acme": "cus_acme"}


def mixed_rows() -> list[LedgerRow]:
    return [
        make_row(prompt_tokens=1000, cached_tokens=200, completion_tokens=300, reasoning_tokens=100),
        make_row(tier="deliberate", prompt_tokens=1000, completion_tokens=2000, reasoning_tokens=1500,
                 depth=Depth(samples=3, floor=1024, floor_met=True, agreement=2 / 3)),
        make_row(tier="deliberate", prompt_tokens=7, completion_tokens=9,
                 depth=Depth(floor=1, floor_met=False), outcome="client_disconnected", streamed=True,
                 estimated=True),
        make_row(model="tiny-1b", prompt_tokens=2_500_000, completion_tokens=500_000),
        make_row(),  # costs nothing: only the zero request line
        make_row(tenant=None, key_id=None, prompt_tokens=10**6),  # auth disabled
        make_row(tenant="globex", prompt_tokens=10**6),  # no Stripe customer
    ]  # fmt: skip


def parse_csv(lines: Iterable[str]) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO("".join(lines))))


def test_csv_parses_back() -> None:
    rows = mixed_rows()
    lines = list(csv_export(rows))
    assert lines[0] == ",".join(CSV_COLUMNS) + "\r\n"
    parsed = parse_csv(lines)
    assert len(parsed) == sum(len(row.charge.lines) for row in rows)
    first = parsed[0]
    assert first["request_id"] == rows[0].record.request_id
    assert (first["tenant"], first["tier"], first["rated_tier"], first["model"]) == (
        "acme", "fast", "fast", "qwen3-8b"
    )  # fmt: skip
    assert (first["kind"], first["quantity"], first["unit_price"], first["amount"]) == (
        "input", "800", "0.050000", "0.000040"
    )  # fmt: skip
    assert first["started_at"] == "2026-01-15T12:00:00.000000Z"
    assert (first["streamed"], first["price_version"], first["currency"]) == ("false", "2026-01-01", "USD")
    missed = [line for line in parsed if line["request_id"] == rows[2].record.request_id]
    assert {(line["tier"], line["rated_tier"]) for line in missed} == {("deliberate", "fast")}
    assert parsed[-1]["tenant"] == "globex"
    assert [line["tenant"] for line in parsed if line["request_id"] == rows[5].record.request_id] == ["", ""]


def test_jsonl_parses_back() -> None:
    rows = mixed_rows()
    objects = [orjson.loads(line) for line in jsonl_export(rows)]
    assert len(objects) == len(rows)
    for obj, row in zip(objects, rows, strict=True):
        assert obj["record"] == orjson.loads(row.record.to_json())
        charge = obj["charge"]
        assert charge["total_micros"] == row.charge.total
        assert Decimal(charge["total"]) == micros_to_decimal(row.charge.total)
        assert [line["amount_micros"] for line in charge["lines"]] == [
            line.amount for line in row.charge.lines
        ]
        assert sum(Decimal(line["amount"]) for line in charge["lines"]) == Decimal(charge["total"])


def test_openmeter_batch_is_a_cloudevents_array() -> None:
    rows = mixed_rows()
    tally = ExportTally()
    events = orjson.loads(b"".join(openmeter_batch(rows, tally)))
    assert OPENMETER_CONTENT_TYPE == "application/cloudevents-batch+json"
    assert isinstance(events, list)
    for event in events:
        assert {"specversion", "type", "id", "time", "source", "subject", "data"} <= set(event)
        assert (event["specversion"], event["source"]) == ("1.0", "tiergate")
        assert datetime.fromisoformat(event["time"]).utcoffset() is not None
        data = event["data"]
        assert {"model", "tier", "type", "amount", "amount_micros"} <= set(data)
        assert ("tokens" in data) == (event["type"] == "tokens")
        assert event["id"] == f"{event['id'].rsplit(':', 1)[0]}:{data['type']}"
    ids = [event["id"] for event in events]
    assert len(ids) == len(
        set(ids)
    )  # OpenMeter deduplicates on (source, id): distinct events need distinct ids
    first = events[0]
    assert first == {
        "specversion": "1.0",
        "type": "tokens",
        "id": f"{rows[0].record.request_id}:input",
        "time": "2026-01-15T12:00:00.000000Z",
        "source": "tiergate",
        "subject": "acme",
        "data": {
            "tokens": 800,
            "amount": "0.000040",
            "amount_micros": 40,
            "currency": "USD",
            "model": "qwen3-8b",
            "tier": "fast",
            "rated_tier": "fast",
            "type": "input",
        },
    }
    premium = next(event for event in events if event["data"]["type"] == "depth_premium")
    assert (premium["type"], premium["data"]["amount_micros"]) == ("request", 500)
    # the row without a tenant has no subject: skipped and counted
    assert (tally.skipped_rows, tally.skipped_micros) == (1, rows[5].charge.total)
    assert not any(event["id"].startswith(rows[5].record.request_id) for event in events)


def test_openmeter_ids_are_deterministic() -> None:
    rows = mixed_rows()
    assert b"".join(openmeter_batch(rows)) == b"".join(openmeter_batch(rows))


def test_an_empty_openmeter_batch() -> None:
    assert b"".join(openmeter_batch([])) == b"[]"
    assert orjson.loads(b"".join(openmeter_batch([make_row(tenant=None)]))) == []


def test_stripe_meter_events() -> None:
    rows = mixed_rows()
    tally = ExportTally()
    events = list(stripe_meter_events(rows, CUSTOMERS, tally=tally))
    billed = [row for row in rows if row.record.tenant == "acme" and row.charge.total > 0]
    assert len(events) == len(billed) == 4
    for event, row in zip(events, billed, strict=True):
        assert event == {
            "event_name": "tiergate_cost_micros",
            "payload[stripe_customer_id]": "cus_acme",
            "payload[value]": str(row.charge.total),
            "identifier": row.record.request_id,
            "timestamp": str(int(JAN.timestamp())),
        }
        value = event["payload[value]"]
        assert value.isdigit() and not value.startswith("0") and len(value) <= 15
    # unmapped tenant, no tenant, and the free request
    assert tally.skipped_rows == 3
    assert tally.rows == 4


def test_stripe_event_name_and_lines() -> None:
    lines = list(stripe_meter_lines([make_row(prompt_tokens=10)], CUSTOMERS, event_name="llm_cost"))
    assert len(lines) == 1 and lines[0].endswith(b"\n")
    assert orjson.loads(lines[0])["event_name"] == "llm_cost"


def test_stripe_identifiers_stay_within_100_characters() -> None:
    long_id = "x" * 128  # a client's x-request-id may be this long
    events = list(stripe_meter_events([make_row(request_id=long_id, prompt_tokens=10)], CUSTOMERS))
    identifier = events[0]["identifier"]
    assert len(identifier) <= 100 and identifier.startswith("sha256:")
    again = list(stripe_meter_events([make_row(request_id=long_id, prompt_tokens=10)], CUSTOMERS))
    assert again[0]["identifier"] == identifier


def test_stripe_refuses_a_value_past_15_digits() -> None:
    huge = make_row(tier="deliberate", model="qwen3-32b", prompt_tokens=4 * 10**15)
    assert len(str(huge.charge.total)) == 16
    with pytest.raises(ValueError, match="15 digits"):
        list(stripe_meter_events([huge], CUSTOMERS))


def _csv_sum(rows: list[LedgerRow], tally: ExportTally) -> int:
    total = sum(Decimal(line["amount"]) for line in parse_csv(csv_export(rows, tally)))
    return int(total * 1_000_000)


def _jsonl_sum(rows: list[LedgerRow], tally: ExportTally) -> int:
    return sum(orjson.loads(line)["charge"]["total_micros"] for line in jsonl_export(rows, tally))


def _openmeter_sum(rows: list[LedgerRow], tally: ExportTally) -> int:
    events = orjson.loads(b"".join(openmeter_batch(rows, tally)))
    return sum(event["data"]["amount_micros"] for event in events)


def _stripe_sum(rows: list[LedgerRow], tally: ExportTally) -> int:
    lines = stripe_meter_lines(rows, {"acme": "cus_1", "globex": "cus_2"}, tally=tally)
    return sum(int(orjson.loads(line)["payload[value]"]) for line in lines)


@pytest.mark.parametrize("exported_sum", [_csv_sum, _jsonl_sum, _openmeter_sum, _stripe_sum])
def test_exports_sum_to_the_invoice_and_the_charges(
    exported_sum: Callable[[list[LedgerRow], ExportTally], int],
) -> None:
    rows = [row for row in mixed_rows() if row.record.tenant == "acme"]
    rows += [make_row(prompt_tokens=n * 7919, completion_tokens=n * 104_729 % 5000) for n in range(50)]
    invoice = build_invoice(
        rows, "acme", "USD", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    )
    tally = ExportTally()
    exported = exported_sum(rows, tally)
    assert exported + tally.skipped_micros == invoice.total == sum(row.charge.total for row in rows)
    assert exported == tally.exported_micros
    assert tally.rows + tally.skipped_rows == len(rows)


EXPORTERS: list[Callable[[Iterable[LedgerRow]], Iterator[object]]] = [
    csv_export,
    jsonl_export,
    openmeter_events,
    openmeter_batch,
    lambda rows: stripe_meter_events(rows, CUSTOMERS),
    lambda rows: stripe_meter_lines(rows, CUSTOMERS),
]


class Counted:
    """`n` copies of a row, counting how many the export has pulled so far."""

    def __init__(self, row: LedgerRow, n: int) -> None:
        self.row, self.n, self.pulled = row, n, 0

    def __iter__(self) -> Iterator[LedgerRow]:
        for _ in range(self.n):
            self.pulled += 1
            yield self.row


TEMPLATE = make_row(tier="deliberate", prompt_tokens=100, cached_tokens=10, completion_tokens=100,
                    reasoning_tokens=50, depth=Depth(floor=10, floor_met=True))  # fmt: skip


@pytest.mark.parametrize("export", EXPORTERS)
def test_exports_are_lazy_generators(export: Callable[[Iterable[LedgerRow]], Iterator[object]]) -> None:
    rows = Counted(TEMPLATE, 100_000)
    pieces = export(rows)
    assert inspect.isgenerator(pieces)
    assert rows.pulled == 0  # nothing is read before the first piece is asked for
    assert len(list(itertools.islice(pieces, 10))) == 10
    assert rows.pulled <= 10  # it read only as far as the pieces it gave


@pytest.mark.parametrize("export", [openmeter_batch, lambda rows: stripe_meter_lines(rows, CUSTOMERS)])
def test_a_100k_row_export_never_runs_ahead_of_its_output(
    export: Callable[[Iterable[LedgerRow]], Iterator[object]],
) -> None:
    rows = Counted(TEMPLATE, 100_000)
    given = 0
    for _ in export(rows):
        given += 1
        assert rows.pulled <= given  # each piece comes from a row already read, none from rows ahead
    assert rows.pulled == 100_000
    assert given >= 100_000
