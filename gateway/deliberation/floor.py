"""Depth floor by budget forcing (s1, Muennighoff et al. 2025): a sample whose model closed its reasoning
before `floor` tokens is sent back, its reasoning still open and ending in the cue ("Wait"), so the model
thinks on; up to `max_extensions` times. Samples extend concurrently, round by round."""

from __future__ import annotations

import asyncio

from gateway.deliberation.cap import answer_capped
from gateway.deliberation.plan import DepthPlan
from gateway.deliberation.run import Run, Sample
from gateway.deliberation.strategy import Engine

__all__ = ["DepthFloor", "may_extend"]


class DepthFloor:
    def prepare(self, run: Run) -> None:
        pass

    async def refine(self, run: Run, engine: Engine) -> None:
        for _ in range(run.plan.max_extensions):
            short = [sample for sample in run.drawing if _short(run, sample)]
            if not short:
                return
            await asyncio.gather(*(engine.extend(run, sample, close=False) for sample in short))
            await answer_capped(run, engine)  # an extension may run into the cap


def _short(run: Run, sample: Sample) -> bool:
    # "length": the answer was cut by max_tokens, there is no room to think more
    stopped = sample.finish_reason == "stop"
    return (
        stopped
        and not sample.capped
        and may_extend(run.plan, sample.reasoning_tokens, sample.extensions, sample.generated)
    )


def may_extend(plan: DepthPlan, reasoning: int, extensions: int, generated: int) -> bool:
    """Whether a sample that stopped with this much reasoning, these extensions and this much generated
    is sent back to think on."""
    remaining = plan.remaining(generated)
    room = remaining is None or remaining > plan.answer_room  # to think on, and still answer
    below_cap = plan.cap is None or reasoning < plan.cap
    return room and reasoning < plan.floor and extensions < plan.max_extensions and below_cap
