"""The price book: loading, validation naming the bad key, version selection, coverage."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pricing import CoverageError, NotPriced, PriceBook, PriceBookError, load_price_book
from tests.pricing.factories import JAN, JUL, OFFERS, book_data, make_book

BOOK_YAML = """\
currency: USD
versions:
  - effective_from: 2026-01-01
    prices:
      fast:
        qwen3-8b: {input: "0.05", cached_input: "0.01", output: "0.20", request: "0"}
      deliberate:
        qwen3-8b: {input: "0.10", cached_input: "0.02", output: "0.60", reasoning: "0.60", request: "0.0001",
                   depth_premium: "0.0005"}
  - effective_from: 2026-03-01T12:00:00+02:00
    prices:
      fast:
        qwen3-8b: {input: 1, output: "2.5"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_price_book(tmp_path: Path) -> None:
    book = load_price_book(write(tmp_path, BOOK_YAML))
    assert book.currency == "USD"
    assert [version.label for version in book.versions] == ["2026-01-01", "2026-03-01T10:00:00Z"]
    assert book.versions[1].effective_from == datetime(2026, 3, 1, 10, tzinfo=UTC)
    fast = book.versions[0].require("fast", "qwen3-8b")
    assert (fast.input, fast.cached_input, fast.output, fast.reasoning, fast.request) == (
        50_000,
        10_000,
        200_000,
        200_000,  # reasoning defaults to the output price
        0,
    )
    deliberate = book.versions[0].require("deliberate", "qwen3-8b")
    assert (deliberate.request, deliberate.depth_premium) == (100, 500)
    later = book.versions[1].require("fast", "qwen3-8b")
    assert (later.input, later.cached_input, later.output, later.request) == (
        1_000_000,
        1_000_000,
        2_500_000,
        0,
    )


def test_version_in_force_is_the_latest_at_or_before_the_start() -> None:
    book = make_book()
    switch = datetime(2026, 6, 1, tzinfo=UTC)
    assert book.version_at(JAN).label == "2026-01-01"
    assert book.version_at(switch - timedelta(microseconds=1)).label == "2026-01-01"
    assert book.version_at(switch).label == "2026-06-01T00:00:00Z"
    assert book.version_at(JUL).label == "2026-06-01T00:00:00Z"
    assert book.version_at(datetime(2026, 1, 1, tzinfo=UTC)).label == "2026-01-01"


def test_no_version_before_the_first() -> None:
    with pytest.raises(NotPriced, match="no price version in force"):
        make_book().version_at(datetime(2025, 12, 31, 23, 59, tzinfo=UTC))


def test_version_at_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        make_book().version_at(datetime(2026, 2, 1))


def test_price_lookup() -> None:
    version, price = make_book().price("deliberate", "qwen3-32b", JAN)
    assert version.label == "2026-01-01"
    assert price.cached_input == price.input == 300_000
    with pytest.raises(NotPriced, match="no fast price for model 'qwen3-32b'"):
        make_book().price("fast", "qwen3-32b", JAN)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation of the decoded book at a dotted path ("versions.0.prices.fast")."""

    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        elif value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


_DELETE = object()
QWEN_FAST = "versions.0.prices.fast.qwen3-8b"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set(f"{QWEN_FAST}.output", "-0.20"), "versions[0].prices.fast.qwen3-8b.output: negative price"),
        (_set(f"{QWEN_FAST}.input", 0.05), "versions[0].prices.fast.qwen3-8b.input: float 0.05 is not exact"),
        (_set(f"{QWEN_FAST}.input", "five"), "versions[0].prices.fast.qwen3-8b.input: not a decimal"),
        (_set(f"{QWEN_FAST}.input", "0.00000001"), "qwen3-8b.input: more precise than one micro"),
        (_set(f"{QWEN_FAST}.input", True), "versions[0].prices.fast.qwen3-8b.input: not a price"),
        (_set(f"{QWEN_FAST}.outptu", "1"), "versions[0].prices.fast.qwen3-8b.outptu: unknown key"),
        (
            _set(f"{QWEN_FAST}.depth_premium", "1"),
            "fast.qwen3-8b.depth_premium: unknown key .* depth premium",
        ),
        (_set(f"{QWEN_FAST}.output", _DELETE), "versions[0].prices.fast.qwen3-8b.output: missing"),
        (_set(QWEN_FAST, "0.05"), "versions[0].prices.fast.qwen3-8b: expected a mapping of prices"),
        (_set("versions.0.prices.fast.qwen3-8b:fast", {"input": "1", "output": "1"}), "no tier suffix"),
        (_set("versions.0.prices.turbo", {}), "versions[0].prices.turbo: unknown tier"),
        (_set("versions.0.prices", {}), "versions[0].prices: no prices"),
        (_set("versions.0.prices", None), "versions[0].prices: expected a mapping"),
        (_set("versions.0.prices.fast", ["qwen3-8b"]), "versions[0].prices.fast: expected a mapping"),
        (_set("versions.0.effective_from", _DELETE), "versions[0].effective_from: missing"),
        (_set("versions.0.effective_from", "soon"), "versions[0].effective_from: not a date"),
        (_set("versions.0.effective_from", 20260101), "versions[0].effective_from: expected a date"),
        (_set("versions.0.effective_from", datetime(2026, 1, 1)), "versions[0].effective_from: time without"),
        (
            _set("versions.0.effective_from", "2026-01-01T00:00:00"),
            "versions[0].effective_from: time without",
        ),
        (_set("versions.0.comment", "x"), "versions[0].comment: unknown key"),
        (_set("versions.1.effective_from", date(2026, 1, 1)), "versions[1].effective_from: duplicate date"),
        (_set("versions.1.effective_from", "2026-01-01T00:00:00Z"), "versions[1].effective_from: duplicate"),
        (_set("versions.1.effective_from", date(2025, 6, 1)), "versions[1].effective_from: out of order"),
        (_set("versions.1", "2026-07-01"), "versions[1]: expected a mapping"),
        (_set("versions", []), "versions: empty book"),
        (_set("versions", None), "versions: expected a list"),
        (_set("currency", "usd"), "currency: expected an ISO 4217 code"),
        (_set("currency", _DELETE), "currency: expected an ISO 4217 code"),
        (_set("discount", "10%"), "discount: unknown key"),
    ],
)
def test_validation_names_the_bad_key(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    data = book_data()
    mutate(data)
    with pytest.raises(PriceBookError, match=re.escape(message) if "*" not in message else message):
        PriceBook.from_mapping(data)


def test_a_book_is_a_mapping() -> None:
    with pytest.raises(PriceBookError, match="price book: expected a mapping"):
        PriceBook.from_mapping(["USD"])


def test_floats_in_yaml_are_refused_with_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, BOOK_YAML.replace('output: "0.20"', "output: 0.20"))
    with pytest.raises(PriceBookError) as caught:
        load_price_book(path)
    message = str(caught.value)
    assert str(path) in message
    assert (
        'versions[0].prices.fast.qwen3-8b.output: float 0.2 is not exact money; write it as a string: "0.2"'
        in (message)
    )


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    # PyYAML alone would keep the second entry and silently drop the first price
    text = BOOK_YAML.replace(
        '        qwen3-8b: {input: "0.05"',
        '        qwen3-8b: {input: "9", output: "9"}\n        qwen3-8b: {input: "0.05"',
    )
    with pytest.raises(PriceBookError, match="duplicate key 'qwen3-8b'"):
        load_price_book(write(tmp_path, text))


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(PriceBookError, match="cannot read the price book"):
        load_price_book(tmp_path / "missing.yaml")
    with pytest.raises(PriceBookError, match="not valid YAML"):
        load_price_book(write(tmp_path, "currency: [USD\n"))
    with pytest.raises(PriceBookError, match="price book: expected a mapping"):
        load_price_book(write(tmp_path, ""))


def test_coverage_of_the_offered_models() -> None:
    make_book().check_coverage(OFFERS, now=JAN)
    make_book().check_coverage(OFFERS, now=JUL)


def test_coverage_lists_every_gap_and_unknown_model() -> None:
    offers = {
        "qwen3-8b": ("fast", "deliberate"),
        "qwen3-32b": ("fast", "deliberate"),
        "llama-3.1-8b": ("fast",),
    }
    with pytest.raises(CoverageError) as caught:
        make_book().check_coverage(offers, now=JAN)
    assert caught.value.problems == (
        "price version 2026-01-01: gap in coverage: fast llama-3.1-8b is offered but not priced",
        "price version 2026-01-01: gap in coverage: fast qwen3-32b is offered but not priced",
        "price version 2026-01-01: unknown model 'tiny-1b' is priced but not offered",
        "price version 2026-06-01T00:00:00Z: gap in coverage: fast llama-3.1-8b is offered but not priced",
        "price version 2026-06-01T00:00:00Z: gap in coverage: fast qwen3-32b is offered but not priced",
        "price version 2026-06-01T00:00:00Z: unknown model 'tiny-1b' is priced but not offered",
    )
    assert all(problem in str(caught.value) for problem in caught.value.problems)


def test_coverage_checks_only_versions_that_can_still_be_in_force() -> None:
    data = book_data()
    del data["versions"][1]["prices"]["deliberate"]["qwen3-32b"]  # a gap from June on
    book = PriceBook.from_mapping(data)
    with pytest.raises(CoverageError, match="2026-06-01T00:00:00Z: gap in coverage: deliberate qwen3-32b"):
        book.check_coverage(OFFERS, now=JAN)  # June is still ahead: the gap will open
    data = book_data()
    del data["versions"][0]["prices"]["fast"]["tiny-1b"]  # history: January no longer prices tiny-1b
    PriceBook.from_mapping(data).check_coverage(OFFERS, now=JUL)


def test_coverage_before_any_version_is_in_force() -> None:
    with pytest.raises(CoverageError, match="no price version in force at 2025-12-01"):
        make_book().check_coverage(OFFERS, now=datetime(2025, 12, 1, tzinfo=UTC))


def test_coverage_refuses_an_unknown_tier_offered() -> None:
    with pytest.raises(CoverageError, match="qwen3-8b: unknown tier 'turbo'"):
        make_book().check_coverage({**OFFERS, "qwen3-8b": ("fast", "turbo", "deliberate")}, now=JAN)


def test_coverage_defaults_to_now() -> None:
    # every version has started by now (the book's versions are in 2026), so the latest is checked
    with pytest.raises(CoverageError, match="2026-06-01T00:00:00Z: unknown model 'tiny-1b'"):
        make_book().check_coverage({"qwen3-8b": ("fast", "deliberate"), "qwen3-32b": ("deliberate",)})


def test_a_book_built_directly_is_checked_too() -> None:
    versions = make_book().versions
    with pytest.raises(PriceBookError, match="strictly increasing"):
        PriceBook("USD", versions[::-1])
    with pytest.raises(PriceBookError, match="strictly increasing"):
        PriceBook("USD", ())
