"""An answer for every sample: one whose model ended its turn inside its reasoning (it stopped without
closing it, so it said nothing after) is sent back with that reasoning closed, to answer from it. Small
models do this (SmolLM2-135M-Instruct, its turn begun inside `<think>`, on real vLLM), and so may any
reasoning model; the tier promises an answer, not only thoughts. One try per sample: a model that says
nothing again is returned as it is."""

from __future__ import annotations

import asyncio

from gateway.deliberation.run import Run, Sample
from gateway.deliberation.strategy import Engine

__all__ = ["AnswerMissing"]


class AnswerMissing:
    def prepare(self, run: Run) -> None:
        pass

    async def refine(self, run: Run, engine: Engine) -> None:
        unanswered = [sample for sample in run.drawing if _unanswered(sample)]
        await asyncio.gather(*(engine.extend(run, sample, close=True) for sample in unanswered))


def _unanswered(sample: Sample) -> bool:
    # "length": cut by max_tokens, no room left to answer; capped samples are the cap's to answer
    return (
        sample.finish_reason == "stop"
        and not sample.capped
        and bool(sample.reasoning)
        and not sample.content.strip()
        and not sample.tool_calls
    )
