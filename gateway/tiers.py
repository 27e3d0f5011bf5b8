"""The two qualities of inference tiergate sells."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ReasoningEffort", "Tier"]


class Tier(StrEnum):
    FAST = "fast"  # speculative decoding, relay only: latency is the promise
    DELIBERATE = "deliberate"  # reasoning models: depth is the promise


class ReasoningEffort(StrEnum):
    NONE = "none"
    MINIMAL = "minimal"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    XHIGH = "xhigh"
