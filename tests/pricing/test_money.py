"""Money: exact parsing, the one rounding rule, formatting without floats."""

from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Decimal

import pytest

from pricing import format_micros, line_amount, micros_to_decimal, parse_money


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0.15", 150_000),
        ("2", 2_000_000),
        (2, 2_000_000),
        ("0.000075", 75),
        ("0.000001", 1),
        ("0", 0),
        (0, 0),
        ("1e-6", 1),  # YAML reads 1e-6 as a string; Decimal reads it exactly
        ("123456789.123456", 123_456_789_123_456),
    ],
)
def test_parse_money_is_exact(text: object, micros: int) -> None:
    assert parse_money(text) == micros


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0.15, "float"),
        (2.0, "float"),
        (True, "not a price"),
        (None, "not a price"),
        (["1"], "not a price"),
        ("-0.1", "negative price"),
        (-1, "negative price"),
        ("abc", "not a decimal"),
        ("NaN", "not a finite"),
        ("Infinity", "not a finite"),
        ("0.0000001", "more precise than one micro"),
        ("0.0000015", "more precise than one micro"),
    ],
)
def test_parse_money_refuses(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_money(value)


def test_a_float_is_refused_with_the_fix_in_the_message() -> None:
    with pytest.raises(ValueError, match=r'write it as a string: "0.15"'):
        parse_money(0.15)


@pytest.mark.parametrize(
    ("quantity", "unit_price", "amount"),
    [
        (0, 150_000, 0),
        (1_000_000, 150_000, 150_000),  # exactly the per-million price
        (500_000, 1, 1),  # 0.5 micro rounds up
        (499_999, 1, 0),  # 0.499999 rounds down
        (2_500_000, 1, 3),  # 2.5 -> 3: half up, not half to even
        (1_500_001, 1, 2),
        (3, 333_333, 1),  # 0.999999 -> 1
        (1, 499_999, 0),
        (1, 500_000, 1),
        (10**12, 10**9, 10**15),  # a trillion tokens at 1000 units per million: exact, no overflow
        (10**15 + 1, 999_999, (10**15 + 1) * 999_999 // 10**6 + 1),  # remainder 999_999 rounds up
    ],
)
def test_line_amount_rounds_once_half_up(quantity: int, unit_price: int, amount: int) -> None:
    assert line_amount(quantity, unit_price) == amount


def test_line_amount_matches_decimal_half_up() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        quantity, price = rng.randrange(0, 10**8), rng.randrange(0, 10**8)
        exact = Decimal(quantity) * Decimal(price) / Decimal(10**6)
        assert line_amount(quantity, price) == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_line_amount_refuses_negatives() -> None:
    with pytest.raises(ValueError, match="negative"):
        line_amount(-1, 5)


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "0.000000"),
        (1234, "0.001234"),
        (1_000_000, "1.000000"),
        (123_456_789_012, "123456.789012"),
        (-5, "-0.000005"),
        (-1_500_000, "-1.500000"),
    ],
)
def test_format_micros(micros: int, text: str) -> None:
    assert format_micros(micros) == text
    assert micros_to_decimal(micros) == Decimal(text)
    assert str(micros_to_decimal(micros)) == text


def test_format_and_parse_round_trip() -> None:
    rng = random.Random(3)
    for _ in range(500):
        micros = rng.randrange(0, 10**15)
        assert parse_money(format_micros(micros)) == micros
