"""The one interface of a deliberation strategy, and the strategies a request gets.

A strategy shapes the first engine request (`prepare`) and then works on the samples that came back
(`refine`), asking the runner for more engine work through `Engine`. They run in order: each sees what
the ones before it did. Adding one (best-of-n with a verifier, say) is a new module with these two methods
and a line in `strategies_for`.
"""

from __future__ import annotations

from typing import Protocol

from gateway.deliberation.run import Run, Sample

__all__ = ["Engine", "Strategy", "strategies_for"]


class Engine(Protocol):
    async def extend(self, run: Run, sample: Sample, *, close: bool) -> None:
        """Continue a sample: its reasoning so far sent back as the open assistant turn, ending in the cue
        (`close=False`: it thinks on), or closed by the end-of-thinking delimiter (`close=True`: answer)."""
        ...

    async def draw(self, run: Run, wanted: dict[int, int]) -> None:
        """Another wave of samples: `wanted[k]` new ones for choice k, appended to `run.samples` and refined
        by the strategies before the one asking (floor, cap, an answer for each)."""
        ...


class Strategy(Protocol):
    def prepare(self, run: Run) -> None: ...

    async def refine(self, run: Run, engine: Engine) -> None: ...


def strategies_for(run: Run) -> list[Strategy]:
    from gateway.deliberation.answer import AnswerMissing
    from gateway.deliberation.cap import DepthCap
    from gateway.deliberation.consistency import SelfConsistency
    from gateway.deliberation.floor import DepthFloor
    from gateway.deliberation.prompted import PromptedReasoning

    chosen: list[Strategy] = []
    if run.settings.reasoning == "prompted":
        chosen.append(PromptedReasoning())
    if run.plan.cap is not None:
        chosen.append(DepthCap())
    if run.plan.floor > 0:
        chosen.append(DepthFloor())
    chosen.append(AnswerMissing())  # after the floor (it may extend such a sample), before the vote
    if run.plan.samples > 1:
        chosen.append(SelfConsistency())
    return chosen
