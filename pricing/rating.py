"""Rating: a usage record and the price book in, a charge out. Pure functions; the clock is the record's.

Token lines split the record's counts so that every token is on exactly one line (REFERENCE: reasoning billed
twice or not at all):

    input        = prompt_tokens - cached_tokens        cached_input = cached_tokens
    output       = completion_tokens - reasoning_tokens reasoning    = reasoning_tokens

The depth rule (the deliberate tier's promise is depth; the premium is billed only when delivered):
- floor_met is True and no shortfall:  deliberate prices plus the depth premium;
- floor_met is True with a shortfall (a cap or an effort the engine ignored, samples it did not return):
  deliberate prices, no premium;
- floor_met is None:  no promise was made: deliberate prices, no premium;
- floor_met is False: the promise was broken: the whole request at the fast tier's prices for the model
  (`rated_tier` "fast"), no premium; if the model has no fast price, deliberate prices without premium.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from pricing.book import PriceBook
from pricing.charges import Charge, ChargeKind, ChargeLine
from pricing.money import TOKENS_PER_PRICE_UNIT, Micros, format_micros, line_amount
from pricing.prices import Price, PriceVersion
from pricing.records import UsageRecord

__all__ = ["rate", "usage_cost_fields", "worst_case"]


def rate(record: UsageRecord, book: PriceBook) -> Charge:
    """The charge for one request, at the price version in force at its start. NotPriced if there is none."""
    version = book.version_at(record.started_at)
    depth = record.depth
    rated_tier, price, premium = _applicable(
        version, record.tier, record.model, depth.floor_met, bool(depth.shortfall)
    )
    token_counts: tuple[tuple[ChargeKind, int], ...] = (
        ("input", record.prompt_tokens - record.cached_tokens),
        ("cached_input", record.cached_tokens),
        ("output", record.completion_tokens - record.reasoning_tokens),
        ("reasoning", record.reasoning_tokens),
    )
    lines = [
        ChargeLine(kind, quantity, price.unit(kind), line_amount(quantity, price.unit(kind)))
        for kind, quantity in token_counts
        if quantity  # a zero-token line says nothing and clutters every export
    ]
    # The request line is kept even at a zero fee: it is how invoices count requests.
    lines.append(ChargeLine("request", 1, price.request, price.request))
    if premium:
        lines.append(ChargeLine("depth_premium", 1, price.depth_premium, price.depth_premium))
    return Charge(
        request_id=record.request_id,
        currency=book.currency,
        price_version=version.label,
        rated_tier=rated_tier,
        lines=tuple(lines),
        total=sum(line.amount for line in lines),
    )


def _applicable(
    version: PriceVersion, tier: str, model: str, floor_met: bool | None, shortfall: bool = False
) -> tuple[str, Price, bool]:
    """(the tier whose prices apply, those prices, whether the depth premium is charged): the depth rule.
    `shortfall`: the depth audit found depth asked for and not delivered (a missed floor: floor_met too)."""
    if tier != "deliberate":
        return tier, version.require(tier, model), False
    deliberate = version.require("deliberate", model)
    if floor_met is True:
        return "deliberate", deliberate, not shortfall
    if floor_met is False:
        fast = version.price("fast", model)
        if fast is not None:
            return "fast", fast, False
    return "deliberate", deliberate, False


def _ceil_amount(quantity: int, unit_price: Micros) -> Micros:
    return -(-quantity * unit_price // TOKENS_PER_PRICE_UNIT)


def worst_case(
    book: PriceBook,
    tier: str,
    model: str,
    at: datetime,
    prompt_tokens_estimate: int,
    max_output_tokens: int,
    n: int = 1,
) -> Micros:
    """The most a request could be charged, for a budget reservation taken before it runs.

    Per sample: `prompt_tokens_estimate` prompt tokens and at most `max_output_tokens` output tokens
    (reasoning included, forced extensions included); `n` samples multiply both. Every prompt token is
    counted at the higher of the input and cached-input prices, every output token at the higher of the
    output and reasoning prices, plus the request fee and, for the deliberate tier, the depth premium. For a
    deliberate request the fast-price fallback of a missed floor is considered too (a book may price fast
    higher). Each group is rounded up and given one more micro, because `rate` splits it into two lines
    that each round half up. So `rate(record).total <= worst_case(...)` for any record within these bounds.
    """
    for name, value, minimum in (
        ("prompt_tokens_estimate", prompt_tokens_estimate, 0),
        ("max_output_tokens", max_output_tokens, 0),
        ("n", n, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    version = book.version_at(at)
    candidates = [_applicable(version, tier, model, True)]
    if tier == "deliberate":
        candidates.append(_applicable(version, tier, model, False))
    prompt, output = n * prompt_tokens_estimate, n * max_output_tokens
    return max(
        _ceil_amount(prompt, max(price.input, price.cached_input))
        + 1
        + _ceil_amount(output, max(price.output, price.reasoning))
        + 1
        + price.request
        + (price.depth_premium if premium else 0)
        for _, price, premium in candidates
    )


def usage_cost_fields(charge: Charge) -> dict[str, object]:
    """The cost fields merged into a response's `usage` (the body, and the final chunk of a stream).

    `cost` is OpenRouter's field: a JSON number in currency units. It is never a float here: it is an
    `orjson.Fragment` holding the exact decimal text ("0.001234"), which `orjson.dumps` writes verbatim, so
    the bytes on the wire are exact (serialize with orjson; the standard json module cannot). `cost_micros`
    is the same amount as an exact integer, for clients that must not parse money as a float.
    `cost_details` says how it was priced: currency, price version, the tier whose prices applied, and the
    amount of each charge line in micros.
    """
    return {
        "cost": orjson.Fragment(format_micros(charge.total).encode("ascii")),
        "cost_micros": charge.total,
        "cost_details": {
            "currency": charge.currency,
            "price_version": charge.price_version,
            "rated_tier": charge.rated_tier,
            "amounts_micros": {line.kind: line.amount for line in charge.lines},
        },
    }
