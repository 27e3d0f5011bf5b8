"""Rating: exact hand-computed charges, no double counting, the depth rule, worst cases, cost fields."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import orjson
import pytest

from pricing import Charge, Depth, NotPriced, PriceBook, rate, usage_cost_fields, worst_case
from tests.pricing.factories import JAN, JUL, book_data, make_book, make_record

MET = Depth(samples=1, floor=1024, floor_met=True)
MISSED = Depth(samples=1, floor=1024, floor_met=False)


def lines(charge: Charge) -> dict[str, tuple[int, int, int]]:
    return {line.kind: (line.quantity, line.unit_price, line.amount) for line in charge.lines}


def test_fast_request_by_hand() -> None:
    # qwen3-8b fast in January: input 0.05, cached 0.01, output 0.20 (reasoning defaults to it), no fee
    record = make_record(prompt_tokens=1000, cached_tokens=200, completion_tokens=300, reasoning_tokens=100)
    charge = rate(record, make_book())
    assert lines(charge) == {
        "input": (800, 50_000, 40),  # 800 x 0.05 / 1M = 0.00004
        "cached_input": (200, 10_000, 2),
        "output": (200, 200_000, 40),
        "reasoning": (100, 200_000, 20),
        "request": (1, 0, 0),
    }
    assert charge.total == 102
    assert (charge.currency, charge.price_version, charge.rated_tier) == ("USD", "2026-01-01", "fast")
    assert charge.request_id == record.request_id


def test_deliberate_request_with_the_floor_met_by_hand() -> None:
    record = make_record(
        tier="deliberate", prompt_tokens=1000, cached_tokens=200, completion_tokens=3000,
        reasoning_tokens=2500, depth=MET,
    )  # fmt: skip
    charge = rate(record, make_book())
    assert lines(charge) == {
        "input": (800, 100_000, 80),
        "cached_input": (200, 20_000, 4),
        "output": (500, 600_000, 300),
        "reasoning": (2500, 600_000, 1500),
        "request": (1, 100, 100),
        "depth_premium": (1, 500, 500),
    }
    assert charge.total == 2484
    assert charge.rated_tier == "deliberate"


def test_rounding_half_up_at_half_a_micro() -> None:
    # tiny-1b costs one micro per million input tokens and three per million output tokens
    record = make_record(model="tiny-1b", prompt_tokens=2_500_000, completion_tokens=500_000)
    assert lines(rate(record, make_book())) == {
        "input": (2_500_000, 1, 3),  # 2.5 micros -> 3 (half up, not to even)
        "output": (500_000, 3, 2),  # 1.5 micros -> 2
        "request": (1, 0, 0),
    }
    below = make_record(model="tiny-1b", prompt_tokens=499_999, completion_tokens=166_666)
    assert lines(rate(below, make_book())) == {
        "input": (499_999, 1, 0),  # 0.499999 -> 0
        "output": (166_666, 3, 0),  # 0.499998 -> 0
        "request": (1, 0, 0),
    }


def test_each_line_is_rounded_once_and_the_total_is_their_sum() -> None:
    # 0.5 micro on each of two lines: each rounds up; the total is the sum of the rounded lines (2), not a
    # re-rounding of the exact sum (1)
    record = make_record(model="tiny-1b", prompt_tokens=500_000, completion_tokens=166_667)
    charge = rate(record, make_book())
    assert [line.amount for line in charge.lines] == [1, 1, 0]  # 0.5 -> 1, 0.500001 -> 1, fee 0
    assert charge.total == 2


def test_big_numbers_are_exact() -> None:
    record = make_record(
        tier="deliberate", model="qwen3-32b", prompt_tokens=10**12 + 7, completion_tokens=3 * 10**11 + 1,
        reasoning_tokens=10**11, depth=MET,
    )  # fmt: skip
    charge = rate(record, make_book())
    exact = {
        "input": Decimal(10**12 + 7) * Decimal("0.30"),
        "output": Decimal(2 * 10**11 + 1) * Decimal("1.20"),
        "reasoning": Decimal(10**11) * Decimal("1.50"),
    }  # micros: tokens x units per 1M tokens = tokens x micros per token
    for kind, micros in exact.items():
        assert lines(charge)[kind][2] == int(micros.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    # 300,000,000,002.1 + 240,000,000,001.2 + 150,000,000,000 micros of tokens, then the fee and premium
    assert charge.total == 300_000_000_002 + 240_000_000_001 + 150_000_000_000 + 200 + 1000


def test_zero_tokens_leave_only_the_fees() -> None:
    charge = rate(make_record(tier="deliberate", depth=MET), make_book())
    assert lines(charge) == {"request": (1, 100, 100), "depth_premium": (1, 500, 500)}
    assert charge.total == 600
    assert lines(rate(make_record(), make_book())) == {"request": (1, 0, 0)}


def test_no_token_is_counted_twice_or_dropped() -> None:
    rng = random.Random(11)
    book = make_book()
    for _ in range(300):
        prompt, completion = rng.randrange(0, 10**6), rng.randrange(0, 10**6)
        record = make_record(
            tier=rng.choice(("fast", "deliberate")),
            prompt_tokens=prompt,
            cached_tokens=rng.randrange(0, prompt + 1),
            completion_tokens=completion,
            reasoning_tokens=rng.randrange(0, completion + 1),
        )
        quantities = {line.kind: line.quantity for line in rate(record, book).lines}
        assert quantities.get("input", 0) + quantities.get("cached_input", 0) == record.prompt_tokens
        assert quantities.get("output", 0) + quantities.get("reasoning", 0) == record.completion_tokens
        assert quantities.get("reasoning", 0) == record.reasoning_tokens
        assert 0 not in quantities.values()


def _deliberate(depth: Depth, model: str = "qwen3-8b") -> Charge:
    record = make_record(
        tier="deliberate", model=model, prompt_tokens=1000, completion_tokens=2000, reasoning_tokens=1500,
        depth=depth,
    )  # fmt: skip
    return rate(record, make_book())


def test_depth_rule_floor_met_bills_the_premium() -> None:
    charge = _deliberate(MET)
    assert charge.rated_tier == "deliberate"
    assert lines(charge)["depth_premium"] == (1, 500, 500)
    assert charge.total == 100 + 300 + 900 + 100 + 500


def test_depth_rule_no_promise_is_deliberate_without_premium() -> None:
    charge = _deliberate(Depth(samples=3, agreement=1.0))
    assert charge.rated_tier == "deliberate"
    assert "depth_premium" not in lines(charge)
    assert charge.total == 100 + 300 + 900 + 100


def test_depth_rule_floor_missed_is_rated_at_fast_prices() -> None:
    charge = _deliberate(MISSED)
    assert charge.rated_tier == "fast"
    assert lines(charge) == {
        "input": (1000, 50_000, 50),
        "output": (500, 200_000, 100),
        "reasoning": (1500, 200_000, 300),
        "request": (1, 0, 0),
    }
    assert charge.total == 450


def test_depth_rule_floor_missed_without_a_fast_price() -> None:
    charge = _deliberate(MISSED, model="qwen3-32b")  # qwen3-32b has no fast price
    assert charge.rated_tier == "deliberate"
    assert "depth_premium" not in lines(charge)
    assert charge.total == 300 + 600 + 2250 + 200


@pytest.mark.parametrize("reason", ["cap_ignored", "effort_ignored", "samples_short"])
def test_depth_rule_a_shortfall_with_the_floor_met_bills_no_premium(reason: str) -> None:
    # the floor reached, but depth asked for was not delivered: deliberate prices, no premium
    charge = _deliberate(Depth(samples=1, floor=1024, floor_met=True, shortfall=(reason,)))
    assert charge.rated_tier == "deliberate"
    assert "depth_premium" not in lines(charge)
    assert charge.total == 100 + 300 + 900 + 100


@pytest.mark.parametrize(
    "shortfall", [("floor_missed",), ("floor_missed", "cap_ignored"), ("floor_missed", "effort_ignored")]
)
def test_depth_rule_a_missed_floor_with_other_shortfalls_is_rated_at_fast_prices(
    shortfall: tuple[str, ...],
) -> None:
    charge = _deliberate(Depth(samples=1, floor=1024, floor_met=False, shortfall=shortfall))
    assert (charge.rated_tier, charge.total) == ("fast", 450)
    assert "depth_premium" not in lines(charge)


@pytest.mark.parametrize("tier", ["fast", "deliberate"])
def test_a_relayed_requests_ignored_budget_changes_nothing_billed(tier: str) -> None:
    # relayed without deliberation: no promise, no premium to forfeit
    plain = make_record(tier=tier, prompt_tokens=1000, completion_tokens=2000, reasoning_tokens=1500)
    ignored = make_record(
        tier=tier, prompt_tokens=1000, completion_tokens=2000, reasoning_tokens=1500,
        depth=Depth(shortfall=("budget_ignored",)),
    )  # fmt: skip
    billed, unaudited = rate(ignored, make_book()), rate(plain, make_book())
    assert (billed.rated_tier, billed.lines, billed.total) == (tier, unaudited.lines, unaudited.total)
    assert "depth_premium" not in lines(billed)


def test_fast_tier_never_bills_a_premium() -> None:
    charge = rate(make_record(depth=MET, prompt_tokens=10), make_book())
    assert charge.rated_tier == "fast"
    assert "depth_premium" not in lines(charge)


def test_the_version_in_force_at_the_start_prices_the_request() -> None:
    book = make_book()
    january = rate(make_record(prompt_tokens=10**6, completion_tokens=10**6), book)
    july = rate(make_record(prompt_tokens=10**6, completion_tokens=10**6, started_at=JUL), book)
    assert (january.price_version, january.total) == ("2026-01-01", 50_000 + 200_000)
    assert (july.price_version, july.total) == ("2026-06-01T00:00:00Z", 40_000 + 160_000)
    # a request that started before a switch and ended after it keeps the old price
    straddling = make_record(
        prompt_tokens=10**6, started_at=datetime(2026, 5, 31, 23, 59, 59, tzinfo=UTC), ended_at=JUL
    )
    assert rate(straddling, book).price_version == "2026-01-01"


def test_unpriced_requests_raise_not_priced() -> None:
    with pytest.raises(NotPriced, match="no fast price for model 'qwen3-32b'"):
        rate(make_record(model="qwen3-32b"), make_book())
    with pytest.raises(NotPriced, match="no price version in force"):
        rate(make_record(started_at=datetime(2025, 1, 1, tzinfo=UTC)), make_book())


def test_worst_case_bounds_every_possible_charge() -> None:
    rng = random.Random(2026)
    book = make_book()
    for _ in range(2000):
        tier, model = rng.choice(
            (
                ("fast", "qwen3-8b"),
                ("fast", "tiny-1b"),
                ("deliberate", "qwen3-8b"),
                ("deliberate", "qwen3-32b"),
            )
        )
        at = rng.choice((JAN, JUL))
        n = rng.randrange(1, 6)
        estimate, max_output = rng.randrange(0, 50_000), rng.randrange(0, 50_000)
        bound = worst_case(book, tier, model, at, estimate, max_output, n)
        prompt = rng.randrange(0, n * estimate + 1)
        completion = rng.randrange(0, n * max_output + 1)
        floor_met = rng.choice((True, False, None))
        record = make_record(
            tier=tier,
            model=model,
            started_at=at,
            prompt_tokens=prompt,
            cached_tokens=rng.randrange(0, prompt + 1),
            completion_tokens=completion,
            reasoning_tokens=rng.randrange(0, completion + 1),
            depth=Depth(samples=n, floor=None if floor_met is None else 100, floor_met=floor_met),
        )
        assert rate(record, book).total <= bound


def test_worst_case_by_hand() -> None:
    book = make_book()
    # deliberate qwen3-8b in January: 1000 prompt at 0.10, 2000 output at 0.60, fee 0.0001, premium 0.0005
    assert worst_case(book, "deliberate", "qwen3-8b", JAN, 1000, 2000) == 100 + 1 + 1200 + 1 + 100 + 500
    assert worst_case(book, "deliberate", "qwen3-8b", JAN, 1000, 2000, n=3) == 300 + 1 + 3600 + 1 + 100 + 500
    assert worst_case(book, "fast", "tiny-1b", JAN, 1, 1) == 1 + 1 + 1 + 1  # each group rounds up


def test_worst_case_counts_a_fast_fallback_priced_above_deliberate() -> None:
    data = book_data()
    data["versions"][0]["prices"]["fast"]["qwen3-8b"] = {"input": "50", "output": "50"}
    book = PriceBook.from_mapping(data)
    missed = make_record(
        tier="deliberate", prompt_tokens=1000, completion_tokens=1000, depth=Depth(floor=10, floor_met=False)
    )
    assert rate(missed, book).total == 100_000
    assert worst_case(book, "deliberate", "qwen3-8b", JAN, 1000, 1000) >= 100_000


@pytest.mark.parametrize(
    ("args", "message"),
    [((-1, 10, 1), "prompt_tokens_estimate"), ((10, -1, 1), "max_output_tokens"), ((10, 10, 0), "n must")],
)
def test_worst_case_refuses_nonsense(args: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        worst_case(make_book(), "fast", "qwen3-8b", JAN, *args)


def test_usage_cost_fields_serialize_exactly() -> None:
    charge = _deliberate(MET)
    body = orjson.dumps({"usage": {"prompt_tokens": 1000, **usage_cost_fields(charge)}})
    assert b'"cost":0.001900,' in body  # the exact decimal text, never a float's repr
    usage = orjson.loads(body)["usage"]
    assert usage["cost_micros"] == charge.total == 1900
    assert usage["cost_details"] == {
        "currency": "USD",
        "price_version": "2026-01-01",
        "rated_tier": "deliberate",
        "amounts_micros": {
            "input": 100,
            "output": 300,
            "reasoning": 900,
            "request": 100,
            "depth_premium": 500,
        },
    }
    # a client that parses numbers as Decimal gets the amount exactly
    import json

    assert json.loads(body, parse_float=Decimal)["usage"]["cost"] == Decimal("0.0019")


def test_usage_cost_fields_for_a_free_request() -> None:
    body = orjson.dumps(usage_cost_fields(rate(make_record(), make_book())))
    assert body.startswith(b'{"cost":0.000000,"cost_micros":0,')
