"""Depth cap: no sample reasons beyond `cap` tokens. Engines that take `thinking_token_budget` enforce it
themselves; for the others the runner stops a sample's stream at the cap, and this strategy has the model
answer from the reasoning it had (its thinking closed by the end-of-thinking delimiter)."""

from __future__ import annotations

import asyncio

from gateway.deliberation.run import Run
from gateway.deliberation.strategy import Engine

__all__ = ["DepthCap"]


class DepthCap:
    def prepare(self, run: Run) -> None:
        if run.settings.engine_caps_thinking and run.plan.cap is not None:
            run.body["thinking_token_budget"] = run.plan.cap

    async def refine(self, run: Run, engine: Engine) -> None:
        await answer_capped(run, engine)


async def answer_capped(run: Run, engine: Engine) -> None:
    """Have every sample of the wave stopped at the cap answer."""
    capped = [sample for sample in run.drawing if sample.capped]
    await asyncio.gather(*(engine.extend(run, sample, close=True) for sample in capped))
