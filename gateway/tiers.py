"""The two qualities of inference tiergate sells."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ReasoningEffort", "Tier"]


class Tier(StrEnum):
    FAST = "fast"  # speculative decoding, relay only: latency is the promise
    DELIBERATE = "deliberate"  # reasoning models: depth is the promise
    # fast first, deliberate when the fast answer's confidence is below the model's threshold: not a pool of
    # its own (a model's `cascade` settings offer it over its fast and deliberate tiers)
    CASCADE = "cascade"


class ReasoningEffort(StrEnum):
    NONE = "none"
    MINIMAL = "minimal"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    XHIGH = "xhigh"
