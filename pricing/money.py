"""Money is an integer number of micro-units of the book's currency (1 USD = 1,000,000 micros). Never a float.

Prices come in as decimal strings ("0.15", "2", "0.000075") or integers, parsed with `decimal.Decimal`; a
float is refused: by the time YAML has turned `0.15` into a float it is already 0.149999999999999994...
A price with more precision than one micro is refused too, rather than silently rounded.

The one rounding rule, used for every amount tiergate computes:

    amount (micros) = round_half_up(quantity x unit_price / 1,000,000)

where a token line's unit price is in micros per 1,000,000 tokens. The product is an exact integer and the
division is rounded once, half up (0.5 micro -> 1 micro), to whole micros. A per-request fee is its unit
price exactly (quantity 1, no rounding). A charge's total is the plain integer sum of its line amounts, and
every invoice, export and response sums those same integers: nothing downstream rounds again.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = [
    "MAX_MICROS",
    "MICROS_PER_UNIT",
    "TOKENS_PER_PRICE_UNIT",
    "Micros",
    "format_micros",
    "line_amount",
    "micros_to_decimal",
    "parse_money",
]

Micros = int
MICROS_PER_UNIT = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # token prices are quoted per million tokens
# The largest amount tiergate takes in (a price, a budget): exact in a double, which is what Redis' Lua and
# many JSON clients compute in, and far inside a 64-bit database column.
MAX_MICROS = 2**53 - 1

_MICRO = Decimal(1) / MICROS_PER_UNIT


def parse_money(value: object) -> Micros:
    """A non-negative amount in currency units (`"0.15"`, `"2"`, `2`) as micros. ValueError says why not."""
    # bool is an int subclass: `input: yes` in YAML must not become one unit of money
    if isinstance(value, bool):
        raise ValueError(f'not a price: {value!r}; write a decimal string such as "0.15"')
    if isinstance(value, float):
        raise ValueError(f'float {value!r} is not exact money; write it as a string: "{value!r}"')
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    else:
        raise ValueError(f'not a price: {value!r}; write a decimal string such as "0.15"')
    if not amount.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    if amount < 0:
        raise ValueError(f"negative price: {value!r}")
    micros = amount * MICROS_PER_UNIT
    if micros != micros.to_integral_value():
        raise ValueError(f"more precise than one micro (0.000001): {value!r}")
    if micros > MAX_MICROS:
        raise ValueError(f"larger than the largest amount kept, {format_micros(MAX_MICROS)}: {value!r}")
    return int(micros)


def line_amount(quantity: int, unit_price: Micros) -> Micros:
    """`quantity` tokens at `unit_price` micros per million tokens, rounded once, half up, to whole micros."""
    if quantity < 0 or unit_price < 0:
        raise ValueError(f"negative quantity or price: {quantity}, {unit_price}")
    # exact integer product; adding half the divisor before flooring is half-up for non-negative values
    return (quantity * unit_price + TOKENS_PER_PRICE_UNIT // 2) // TOKENS_PER_PRICE_UNIT


def micros_to_decimal(micros: Micros) -> Decimal:
    """Exact: the Decimal has six places (`Decimal("0.001234")`)."""
    return (Decimal(micros) * _MICRO).quantize(_MICRO)


def format_micros(micros: Micros) -> str:
    """Micros as a fixed six-place decimal string in currency units: 1234 -> "0.001234", -5 -> "-0.000005"."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_UNIT)
    return f"{sign}{whole}.{fraction:06d}"
