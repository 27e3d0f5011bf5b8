"""`usage` as the gateway answers it: OpenAI's token counts (chat's and the Responses API's), and tiergate's
`cost`, `cost_micros`, `cost_details` (with a price book: pricing/rating.py) and `reasoning_depth` (the
deliberate tier: gateway/deliberation/run.py)."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.http.openapi.schema import (
    Json,
    array,
    boolean,
    enum,
    integer,
    nullable,
    number,
    obj,
    ref,
    string,
)
from pricing import SHORTFALLS

__all__ = ["COST_FIELDS", "EFFORTS", "USAGE_SCHEMAS"]

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")

_REASONING_DEPTH = obj(
    {
        "effort": enum(EFFORTS, "The depth level served."),
        "reasoning_tokens": integer("The returned answer's reasoning tokens."),
        "samples": integer("Independent samples drawn (self-consistency votes among them), all choices'."),
        "extensions": integer("Times a sample's reasoning was extended (`Wait`) to reach the floor."),
        "floor": nullable(integer("The level's floor of reasoning tokens.")),
        "floor_met": nullable(
            boolean("Every sample reached the floor (else billed at the fast tier's prices).")
        ),
        "cap": nullable(integer("The level's cap of reasoning tokens.")),
        "agreement": nullable(number("The share of samples that agreed with the answer.")),
        "max_samples": integer(
            "The most samples the level draws (adaptive self-consistency may stop before)."
        ),
        "samples_saved": integer(
            "Samples an adaptive vote did not need: `max_samples - samples`, never billed."
        ),
        "shortfall": array(
            enum(SHORTFALLS),
            "The depth audit: why less depth was delivered than asked (any forfeits the depth premium).",
        ),
    },
    description="What the deliberate tier delivered (docs/deliberation.md); deliberate requests only.",
)

_COST_DETAILS = obj(
    {
        "currency": string(examples=["USD"]),
        "price_version": string("The price version applied (its `effective_from`)."),
        "rated_tier": enum(("fast", "deliberate"), "Whose prices applied: `fast` for a missed floor."),
        "amounts_micros": obj(
            {
                kind: integer()
                for kind in ("input", "cached_input", "output", "reasoning", "request", "depth_premium")
            },
            description="Each charge line, in millionths of the currency unit.",
        ),
    },
    required=("currency", "price_version", "rated_tier", "amounts_micros"),
    description="How the request was priced (docs/pricing.md).",
)

COST_FIELDS: Mapping[str, Json] = {
    "cost": number(
        "The request's cost in currency units, written as the exact decimal (`0.001234`); with a price book"
        " only. Parse it as a decimal, or read `cost_micros`."
    ),
    "cost_micros": integer("The same cost as an exact integer, in millionths of the currency unit."),
    "cost_details": ref("CostDetails"),
}

_CHAT_USAGE = obj(
    {
        "prompt_tokens": integer(),
        "completion_tokens": integer(),
        "total_tokens": integer(),
        "prompt_tokens_details": obj({"cached_tokens": integer()}, extra=True),
        "completion_tokens_details": obj({"reasoning_tokens": integer()}, extra=True),
        **COST_FIELDS,
        "reasoning_depth": ref("ReasoningDepth"),
    },
    required=("prompt_tokens", "completion_tokens", "total_tokens"),
    extra=True,
    description="Tokens over every engine call the request made, and tiergate's cost and depth fields.",
)

_RESPONSES_USAGE = obj(
    {
        "input_tokens": integer(),
        "input_tokens_details": obj({"cached_tokens": integer()}, required=("cached_tokens",), extra=True),
        "output_tokens": integer(),
        "output_tokens_details": obj(
            {"reasoning_tokens": integer()}, required=("reasoning_tokens",), extra=True
        ),
        "total_tokens": integer(),
        **COST_FIELDS,
        "reasoning_depth": ref("ReasoningDepth"),
    },
    required=(
        "input_tokens",
        "input_tokens_details",
        "output_tokens",
        "output_tokens_details",
        "total_tokens",
    ),
    extra=True,
    description="OpenAI's Responses usage, and tiergate's cost and depth fields as in chat.",
)

USAGE_SCHEMAS: Mapping[str, Json] = {
    "Usage": _CHAT_USAGE,
    "ResponseUsage": _RESPONSES_USAGE,
    "CostDetails": _COST_DETAILS,
    "ReasoningDepth": _REASONING_DEPTH,
}
