"""docs/pricing.md stays true: its price book loads and its worked example is what rating computes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import orjson

from pricing import Depth, load_price_book, rate, usage_cost_fields
from tests.pricing.factories import JAN, make_record

DOC = Path(__file__).parents[2] / "docs" / "pricing.md"


def test_the_documented_price_book_loads_and_the_example_holds(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    yaml_block = re.search(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    assert yaml_block is not None
    path = tmp_path / "prices.yaml"
    path.write_text(yaml_block.group(1), encoding="utf-8")
    book = load_price_book(path)
    book.check_coverage({"qwen3-8b": ("fast", "deliberate"), "qwen3-32b": ("deliberate",)}, now=JAN)

    record = make_record(
        tier="deliberate",
        prompt_tokens=1000,
        cached_tokens=200,
        completion_tokens=3000,
        reasoning_tokens=2500,
        depth=Depth(floor=1024, floor_met=True),
    )
    charge = rate(record, book)
    assert charge.total == 2484
    assert "**2,484 micros** (0.002484 USD)" in text
    documented = b'"cost": 0.002484,\n  "cost_micros": 2484,'
    assert documented in text.encode()
    fields = orjson.loads(orjson.dumps(usage_cost_fields(charge)))
    amounts = fields["cost_details"]["amounts_micros"]
    assert amounts == {"input": 80, "cached_input": 4, "output": 300, "reasoning": 1500, "request": 100,
                       "depth_premium": 500}  # fmt: skip

    missed = make_record(
        tier="deliberate",
        prompt_tokens=1000,
        cached_tokens=200,
        completion_tokens=3000,
        reasoning_tokens=2500,
        depth=Depth(floor=1024, floor_met=False),
    )
    assert rate(missed, book).total == 642
    assert "+ 500 = 642 micros" in text

    # the class rule's example: the same request from a premium tenant
    premium = rate(dataclasses.replace(record, priority_class="premium"), book)
    assert (premium.amount_of("class_surcharge"), premium.total) == (497, 2981)
    assert "2,484 + 497 (496.8, half up) = 2,981 micros" in text
