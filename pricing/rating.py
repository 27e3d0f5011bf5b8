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

The cascade rule (the tier that answers fast when it is confident, deliberately when not): its fast stage at
the fast tier's prices, always (its tokens and its request fee); when it escalated, the rest of the record
(the deliberate stage) at the deliberate tier's, under the depth rule above. Not escalated: `rated_tier`
"fast"; escalated: "cascade", the fast stage's lines first, ending in its request line, then the deliberate
stage's (`cascade_stages` splits them). No cascade fee: the fast stage is what a cascade adds.

The class rule (a premium tenant's requests are served first, docs/overload.md): when the version has a rule
for the record's `priority_class`, the charge gets one more line, `class_surcharge`, last: the total of the
lines above times the multiplier less one, rounded once, half up (`ClassRule.surcharge`). A standard request,
or a class the version has no rule for, pays the prices as they are.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from pricing.book import PriceBook
from pricing.charges import Charge, ChargeKind, ChargeLine
from pricing.money import TOKENS_PER_PRICE_UNIT, Micros, format_micros, line_amount
from pricing.prices import Price, PriceVersion
from pricing.records import UsageRecord

__all__ = ["cascade_stages", "rate", "usage_cost_fields", "worst_case"]


def rate(record: UsageRecord, book: PriceBook) -> Charge:
    """The charge for one request, at the price version in force at its start. NotPriced if there is none."""
    version = book.version_at(record.started_at)
    counts = (record.prompt_tokens, record.cached_tokens, record.completion_tokens, record.reasoning_tokens)
    if record.tier == "cascade":
        return _rate_cascade(record, book.currency, version, counts)
    depth = record.depth
    rated_tier, price, premium = _applicable(
        version, record.tier, record.model, depth.floor_met, bool(depth.shortfall)
    )
    lines = _stage_lines(price, premium, *counts)
    return _charge(record, book.currency, version, rated_tier, lines)


def _rate_cascade(
    record: UsageRecord, currency: str, version: PriceVersion, counts: tuple[int, int, int, int]
) -> Charge:
    fast = version.require("fast", record.model)
    cascade = record.cascade
    if cascade is None or not cascade.escalated:  # the fast stage was the whole request
        return _charge(record, currency, version, "fast", _stage_lines(fast, False, *counts))
    prompt, cached, completion = (
        cascade.fast_prompt_tokens,
        cascade.fast_cached_tokens,
        cascade.fast_completion_tokens,
    )
    lines = _stage_lines(fast, False, prompt, cached, completion, 0)
    depth = record.depth
    _, price, premium = _applicable(
        version, "deliberate", record.model, depth.floor_met, bool(depth.shortfall)
    )
    lines += _stage_lines(
        price,
        premium,
        counts[0] - prompt,
        counts[1] - cached,
        counts[2] - completion,
        min(counts[3], counts[2] - completion),
    )
    return _charge(record, currency, version, "cascade", lines)


def _stage_lines(
    price: Price, premium: bool, prompt: int, cached: int, completion: int, reasoning: int
) -> list[ChargeLine]:
    token_counts: tuple[tuple[ChargeKind, int], ...] = (
        ("input", prompt - cached),
        ("cached_input", cached),
        ("output", completion - reasoning),
        ("reasoning", reasoning),
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
    return lines


def _charge(
    record: UsageRecord, currency: str, version: PriceVersion, rated_tier: str, lines: list[ChargeLine]
) -> Charge:
    rule = version.classes.get(record.priority_class) if record.priority_class != "standard" else None
    if rule is not None:
        surcharge = rule.surcharge(sum(line.amount for line in lines))
        lines.append(ChargeLine("class_surcharge", 1, surcharge, surcharge))
    return Charge(
        request_id=record.request_id,
        currency=currency,
        price_version=version.label,
        rated_tier=rated_tier,
        lines=tuple(lines),
        total=sum(line.amount for line in lines),
    )


def cascade_stages(charge: Charge) -> tuple[Micros, Micros]:
    """(the fast stage's amount, the deliberate stage's) of a cascade's charge: an escalated one's fast
    stage ends with its first request line; any other charge is all fast stage. A class surcharge is shared
    in proportion (the fast stage's share rounded down): the two always sum to the total."""
    if charge.rated_tier != "cascade":
        return charge.total, 0
    fast = 0
    for line in charge.lines:
        fast += line.amount
        if line.kind == "request":
            break
    surcharge = charge.amount_of("class_surcharge")
    if surcharge:
        fast += surcharge * fast // (charge.total - surcharge)
    return fast, charge.total - fast


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
    priority_class: str = "standard",
) -> Micros:
    """The most a request could be charged, for a budget reservation taken before it runs.

    Per sample: `prompt_tokens_estimate` prompt tokens and at most `max_output_tokens` output tokens
    (reasoning included, forced extensions included); `n` samples multiply both. Every prompt token is
    counted at the higher of the input and cached-input prices, every output token at the higher of the
    output and reasoning prices, plus the request fee and, for the deliberate tier, the depth premium. For a
    deliberate request the fast-price fallback of a missed floor is considered too (a book may price fast
    higher). Each group is rounded up and given one more micro, because `rate` splits it into two lines
    that each round half up. The class rule of `priority_class`, if the version has one, raises the bound
    by its multiplier, rounded up. So `rate(record).total <= worst_case(...)` for any record within these
    bounds.
    """
    for name, value, minimum in (
        ("prompt_tokens_estimate", prompt_tokens_estimate, 0),
        ("max_output_tokens", max_output_tokens, 0),
        ("n", n, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    version = book.version_at(at)
    most = _most_before_class(version, tier, model, prompt_tokens_estimate, max_output_tokens, n)
    rule = version.classes.get(priority_class) if priority_class != "standard" else None
    return rule.most(most) if rule is not None else most


def _most_before_class(
    version: PriceVersion, tier: str, model: str, prompt_tokens_estimate: int, max_output_tokens: int, n: int
) -> Micros:
    if tier == "cascade":  # both stages' tokens together, each at the dearer of the two tiers' prices
        fast, deliberate = version.require("fast", model), version.require("deliberate", model)
        prompt_unit = max(fast.input, fast.cached_input, deliberate.input, deliberate.cached_input)
        output_unit = max(fast.output, fast.reasoning, deliberate.output, deliberate.reasoning)
        return (
            _ceil_amount(n * prompt_tokens_estimate, prompt_unit)
            + _ceil_amount(n * max_output_tokens, output_unit)
            + 4  # each stage splits each group into two lines that round half up
            + fast.request
            + deliberate.request
            + deliberate.depth_premium
        )
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
            "amounts_micros": _amounts(charge),
        },
    }


def _amounts(charge: Charge) -> dict[str, Micros]:
    """Each kind's amount; a cascade's two stages may both have a line of a kind: summed."""
    amounts: dict[str, Micros] = {}
    for line in charge.lines:
        amounts[line.kind] = amounts.get(line.kind, 0) + line.amount
    return amounts
