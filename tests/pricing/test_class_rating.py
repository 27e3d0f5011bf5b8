"""The class rule: a premium tenant's request pays the whole charge times the version's multiplier, as one
`class_surcharge` line rounded once; standard requests and books without a rule pay the prices as they
are; the worst case bounds it; the record and the ledger keep the class."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from pricing import (
    Cascade,
    Depth,
    PriceBook,
    PriceBookError,
    UsageRecord,
    build_invoice,
    cascade_stages,
    csv_export,
    jsonl_export,
    openmeter_events,
    rate,
    usage_cost_fields,
    worst_case,
)
from pricing.ledger_rows import ledger_row, row_values
from pricing.records import LedgerRow

from .factories import JAN, JUL, book_data, make_book, make_record, replace


def premium_book(multiplier: Any = "1.25") -> PriceBook:
    data = book_data()
    data["versions"][0]["classes"] = {"premium": {"multiplier": multiplier}}
    return PriceBook.from_mapping(data)


BOOK = premium_book()


def test_a_premium_request_pays_the_multiplier_as_one_surcharge_line() -> None:
    # fast qwen3-8b: 1,000 input at 0.05/M = 50, 2,000 output at 0.20/M = 400, no fee: 450 micros
    record = make_record(prompt_tokens=1000, completion_tokens=2000, priority_class="premium")
    charge = rate(record, BOOK)
    assert [line.kind for line in charge.lines] == ["input", "output", "request", "class_surcharge"]
    surcharge = charge.lines[-1]
    assert (surcharge.quantity, surcharge.unit_price, surcharge.amount) == (1, 113, 113)  # 112.5, half up
    assert charge.total == 563 and type(charge.total) is int
    assert usage_cost_fields(charge)["cost_details"]["amounts_micros"]["class_surcharge"] == 113  # type: ignore[index]


def test_standard_requests_and_books_without_a_rule_pay_the_prices_as_they_are() -> None:
    standard = make_record(prompt_tokens=1000, completion_tokens=2000)
    premium = make_record(prompt_tokens=1000, completion_tokens=2000, priority_class="premium")
    assert rate(standard, BOOK).total == 450
    assert rate(premium, make_book()).total == 450  # the book has no class rule
    # the rule is the version's: July's version has none
    july = make_record(prompt_tokens=1000, completion_tokens=2000, started_at=JUL, priority_class="premium")
    assert "class_surcharge" not in [line.kind for line in rate(july, BOOK).lines]


def test_the_surcharge_covers_fees_and_the_depth_premium() -> None:
    record = make_record(
        tier="deliberate",
        prompt_tokens=1000,
        completion_tokens=3000,
        reasoning_tokens=2500,
        depth=Depth(samples=1, floor=512, floor_met=True),
        priority_class="premium",
    )
    base = rate(replace(record, priority_class="standard"), BOOK)
    charge = rate(record, BOOK)
    assert base.amount_of("depth_premium") == 500
    assert charge.amount_of("class_surcharge") == (base.total * 25 + 50) // 100
    assert charge.total == base.total + charge.amount_of("class_surcharge")


def test_an_escalated_cascade_shares_its_surcharge_between_its_stages() -> None:
    record = make_record(
        tier="cascade",
        cascade=Cascade(True, 0.42, 0.5, 300, 0, 60),
        prompt_tokens=1300,
        completion_tokens=3060,
        reasoning_tokens=2500,
        depth=Depth(samples=1, floor=512, floor_met=True),
        priority_class="premium",
    )
    charge = rate(record, BOOK)
    fast, deliberate = cascade_stages(charge)
    assert fast + deliberate == charge.total
    assert charge.lines[-1].kind == "class_surcharge"
    surcharge = charge.amount_of("class_surcharge")
    fast_base = (
        rate(replace(record, priority_class="standard"), BOOK).total
        - rate(
            replace(
                record,
                priority_class="standard",
                cascade=None,
                tier="deliberate",
                prompt_tokens=1000,
                completion_tokens=3000,
            ),
            BOOK,
        ).total
    )
    assert surcharge > 0
    assert fast == fast_base + surcharge * fast_base // (charge.total - surcharge)


@pytest.mark.parametrize("tier", ["fast", "deliberate", "cascade"])
def test_the_worst_case_bounds_a_premium_request(tier: str) -> None:
    plain = worst_case(BOOK, tier, "qwen3-8b", JAN, 1000, 4000)
    most = worst_case(BOOK, tier, "qwen3-8b", JAN, 1000, 4000, priority_class="premium")
    assert most == plain + -(-plain * 25 // 100)  # the multiplier, rounded up
    fields: dict[str, Any] = {"tier": tier, "prompt_tokens": 1000, "completion_tokens": 4000}
    if tier != "fast":
        fields |= {"reasoning_tokens": 4000, "depth": Depth(samples=1, floor=512, floor_met=True)}
    if tier == "cascade":
        fields["cascade"] = Cascade(True, 0.1, 0.5, 0, 0, 0)
    assert rate(make_record(**fields, priority_class="premium"), BOOK).total <= most


def test_the_class_survives_the_record_json_and_the_ledger_row() -> None:
    record = make_record(prompt_tokens=10, completion_tokens=5, priority_class="premium")
    assert UsageRecord.from_json(record.to_json()) == record
    row = LedgerRow(record, rate(record, BOOK))
    values = row_values(row)
    assert values["priority_class"] == "premium"
    assert ledger_row(values) == row
    standard = make_record(prompt_tokens=10)
    assert b"priority_class" not in standard.to_json()  # a standard record keeps its bytes
    assert row_values(LedgerRow(standard, rate(standard, BOOK)))["priority_class"] is None


def test_an_unknown_class_is_not_a_record() -> None:
    with pytest.raises(ValueError, match="priority_class"):
        make_record(priority_class="gold")


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ({"gold": {"multiplier": "2"}}, "unknown priority class"),
        ({"standard": {"multiplier": "2"}}, "takes no rule"),
        ({"premium": {"multiplier": 1.2}}, "decimal string"),
        ({"premium": {"multiplier": "0.9"}}, "at least 1"),
        ({"premium": {"multiplier": "1.0000001"}}, "more precise"),
        ({"premium": {"factor": "2"}}, "unknown key"),
        ({"premium": {}}, "missing"),
    ],
)
def test_a_bad_class_rule_is_refused_when_the_book_loads(classes: object, message: str) -> None:
    data = book_data()
    data["versions"][0]["classes"] = classes
    with pytest.raises(PriceBookError, match=message) as caught:
        PriceBook.from_mapping(data)
    assert "versions[0].classes" in str(caught.value)


def test_a_whole_multiplier_is_fine() -> None:
    record = make_record(prompt_tokens=1000, completion_tokens=2000, priority_class="premium")
    assert rate(record, premium_book(2)).total == 900


def test_statements_show_the_surcharge() -> None:
    premium = make_record(prompt_tokens=1000, completion_tokens=2000, priority_class="premium")
    standard = make_record(prompt_tokens=1000, completion_tokens=2000)
    rows = [LedgerRow(record, rate(record, BOOK)) for record in (premium, standard)]
    invoice = build_invoice(rows, "acme", "USD", JAN - timedelta(days=1), JAN + timedelta(days=1))
    (line,) = [line for line in invoice.lines if line.kind == "class_surcharge"]
    assert (line.tier, line.quantity, line.amount) == ("fast", 1, 113)  # one premium request
    assert invoice.total == 563 + 450 == sum(row.charge.total for row in rows)
    assert invoice.lines[-1] is line  # after the request line: the charge's order
    csv_text = "".join(csv_export(rows))
    assert csv_text.count("class_surcharge") == 1 and "0.000113" in csv_text
    first = orjson.loads(next(iter(jsonl_export(rows[:1]))))
    assert first["record"]["priority_class"] == "premium"
    assert first["charge"]["lines"][-1]["amount_micros"] == 113
    events = [e for e in openmeter_events(rows[:1]) if str(e["id"]).endswith(":class_surcharge")]
    assert [(e["type"], orjson.loads(orjson.dumps(e["data"]))["amount_micros"]) for e in events] == [
        ("request", 113)
    ]
