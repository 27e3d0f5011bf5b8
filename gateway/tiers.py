"""The two qualities of inference tiergate sells."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ENGINE_PRIORITY", "PREMIUM_AHEAD", "ReasoningEffort", "Tier", "engine_priority"]


class Tier(StrEnum):
    FAST = "fast"  # speculative decoding, relay only: latency is the promise
    DELIBERATE = "deliberate"  # reasoning models: depth is the promise
    # fast first, deliberate when the fast answer's confidence is below the model's threshold: not a pool of
    # its own (a model's `cascade` settings offer it over its fast and deliberate tiers)
    CASCADE = "cascade"


# vLLM's `priority` per tier, for pools that take one: lower is scheduled first; a cascade's stages keep the
# fast tier's place (its promise is latency first)
ENGINE_PRIORITY = {Tier.FAST: 0, Tier.CASCADE: 0, Tier.DELIBERATE: 10}
# a premium tenant's request goes ahead of its tier's standard ones, never ahead of a faster tier's
PREMIUM_AHEAD = 1


def engine_priority(tier: Tier, priority_class: str) -> int:
    """vLLM's `priority` for a request of `tier` from a tenant of `priority_class` (lower is sooner)."""
    return ENGINE_PRIORITY[tier] - (PREMIUM_AHEAD if priority_class == "premium" else 0)


class ReasoningEffort(StrEnum):
    NONE = "none"
    MINIMAL = "minimal"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    XHIGH = "xhigh"
