"""What a deliberate request is promised: the effort level its `reasoning_effort` picks."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings import DeliberationSettings
from gateway.tiers import ReasoningEffort

__all__ = ["DepthPlan", "plan_for"]

_ORDER = list(ReasoningEffort)


@dataclass(frozen=True, slots=True)
class DepthPlan:
    effort: str
    floor: int  # reasoning tokens every sample reaches; 0: no floor
    cap: int | None  # reasoning tokens no sample goes beyond
    samples: int
    max_extensions: int


def plan_for(settings: DeliberationSettings, reasoning_effort: str | None) -> DepthPlan:
    """The configured level for the request's effort; an effort with no level of its own takes the nearest
    configured one below it (or above, when none is below); no effort takes `default_effort`."""
    wanted = _effort(reasoning_effort) or settings.default_effort
    levels = settings.efforts
    if wanted not in levels:
        below = [effort for effort in _ORDER[: _ORDER.index(wanted)] if effort in levels]
        above = [effort for effort in _ORDER[_ORDER.index(wanted) :] if effort in levels]
        wanted = below[-1] if below else above[0]
    level = levels[wanted]
    return DepthPlan(wanted.value, level.floor, level.cap, level.samples, level.max_extensions)


def _effort(value: str | None) -> ReasoningEffort | None:
    try:
        return ReasoningEffort(value) if value is not None else None
    except ValueError:
        return None
