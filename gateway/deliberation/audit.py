"""The depth audit: the depth a deliberation asked of its engines against the reasoning they delivered, judged
once, when the run has completed (docs/deliberation.md#the-depth-audit). A pure function of plain values; its
reasons (`pricing.SHORTFALLS`) go to the usage record (the ledger row, `usage.reasoning_depth.shortfall`),
to `tiergate_depth_shortfall_total`, and forfeit the depth premium."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DeliveredDepth", "RequestedDepth", "budget_shortfall", "shortfalls"]


@dataclass(frozen=True, slots=True)
class RequestedDepth:
    floor: int  # reasoning tokens every sample was to reach (0: none)
    cap: int | None  # reasoning tokens no sample was to pass
    engine_caps: (
        bool  # the cap was asked of the engine (`thinking_token_budget`), not enforced by the gateway
    )
    samples: int  # samples the run drew: asked of the engines (`n`, or one call each)


@dataclass(frozen=True, slots=True)
class DeliveredDepth:
    reasoning: Sequence[int]  # each sample's reasoning tokens, over all its calls
    finished: Sequence[bool]  # whether the engine ended each sample (it gave a finish_reason)


def shortfalls(requested: RequestedDepth, delivered: DeliveredDepth) -> tuple[str, ...]:
    """The reasons the delivered depth falls short of the requested, in `pricing.SHORTFALLS` order:

    - floor_missed: a sample's reasoning is below the floor;
    - cap_ignored: the engine was asked to cap thinking and a sample's reasoning is above the cap;
    - effort_ignored: a sample the engine ended has no reasoning at all (asked to reason, it answered);
    - samples_short: the engines ended fewer samples than the run drew (or returned none).
    """
    reasoning, finished = delivered.reasoning, delivered.finished
    found: list[str] = []
    if any(tokens < requested.floor for tokens in reasoning):
        found.append("floor_missed")
    cap = requested.cap
    if requested.engine_caps and cap is not None and any(tokens > cap for tokens in reasoning):
        found.append("cap_ignored")
    if any(done and not tokens for tokens, done in zip(reasoning, finished, strict=True)):
        found.append("effort_ignored")
    if sum(finished) < requested.samples:
        found.append("samples_short")
    return tuple(found)


def budget_shortfall(budget: int, reasoning: int, *, exact: bool) -> tuple[str, ...]:
    """A relayed request (no deliberation) whose client asked the engine for `thinking_token_budget`:
    budget_ignored when the engine's own count of reasoning tokens, over all the request's choices, is above
    `budget` (the client's budget times its choices). A count the gateway estimated (`exact` false: vLLM
    reported none, the reasoning was split from the text) is never held against the engine."""
    return ("budget_ignored",) if exact and reasoning > budget else ()
