"""The cascade rule: the fast stage at fast prices always, the deliberate stage at deliberate prices (depth
rule included) when escalated; one charge, split back into its stages; the worst case bounds it."""

from __future__ import annotations

import orjson
import pytest

from pricing import Cascade, Depth, UsageRecord, cascade_stages, rate, usage_cost_fields, worst_case
from pricing.ledger_rows import ledger_row, row_values
from pricing.records import LedgerRow

from .factories import JAN, make_book, make_record

BOOK = make_book()


def cascaded(escalated: bool, **overrides: object) -> UsageRecord:
    fast = Cascade(escalated, 0.42, 0.5, 300, 0, 60)
    counts: dict[str, object] = {"prompt_tokens": 300, "completion_tokens": 60}
    if escalated:
        counts = {
            "prompt_tokens": 1300,
            "cached_tokens": 200,
            "completion_tokens": 3060,
            "reasoning_tokens": 2500,
        }
        counts["depth"] = Depth(samples=1, floor=512, floor_met=True)
    return make_record(**{"tier": "cascade", "cascade": fast, **counts, **overrides})


def test_a_delivered_fast_answer_costs_what_the_fast_tier_does() -> None:
    record = cascaded(False)
    charge = rate(record, BOOK)
    fast = rate(make_record(prompt_tokens=300, completion_tokens=60), BOOK)
    assert charge.rated_tier == "fast" and charge.total == fast.total
    assert cascade_stages(charge) == (charge.total, 0)


def test_an_escalation_adds_the_deliberate_stage_at_deliberate_prices() -> None:
    record = cascaded(True)
    charge = rate(record, BOOK)
    fast = rate(make_record(prompt_tokens=300, completion_tokens=60), BOOK)
    deliberate = rate(
        make_record(
            tier="deliberate",
            prompt_tokens=1000,
            cached_tokens=200,
            completion_tokens=3000,
            reasoning_tokens=2500,
            depth=Depth(samples=1, floor=512, floor_met=True),
        ),
        BOOK,
    )
    assert charge.rated_tier == "cascade"
    assert cascade_stages(charge) == (fast.total, deliberate.total)
    assert charge.total == fast.total + deliberate.total
    kinds = [line.kind for line in charge.lines]
    assert kinds[: kinds.index("request") + 1] == [line.kind for line in fast.lines]
    amounts = usage_cost_fields(charge)["cost_details"]
    assert isinstance(amounts, dict) and sum(amounts["amounts_micros"].values()) == charge.total


def test_a_missed_floor_rates_the_deliberate_stage_at_fast_prices() -> None:
    missed = cascaded(True, depth=Depth(samples=1, floor=512, floor_met=False))
    met = cascaded(True)
    assert rate(missed, BOOK).total < rate(met, BOOK).total
    assert "depth_premium" not in {line.kind for line in rate(missed, BOOK).lines}


def test_the_worst_case_bounds_both_stages() -> None:
    bound = worst_case(BOOK, "cascade", "qwen3-8b", JAN, 1300, 3060)
    assert rate(cascaded(True), BOOK).total <= bound


def test_a_cascade_record_round_trips_through_json_and_the_ledger_row() -> None:
    record = cascaded(True)
    assert UsageRecord.from_json(record.to_json()) == record
    assert "cascade" not in orjson.loads(make_record().to_json())  # other records keep their bytes
    row = LedgerRow(record, rate(record, BOOK))
    values = row_values(row)
    assert ledger_row(values) == row


@pytest.mark.parametrize(
    "bad",
    [
        {"tier": "fast"},  # a cascade's stages on another tier's record
        {"prompt_tokens": 250, "cached_tokens": 0},  # the fast stage more than the whole
    ],
)
def test_a_cascade_that_is_no_stage_of_its_record_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="cascade"):
        cascaded(True, **bad)
