"""Self-consistency: k samples from one engine call (`n=k`: the prompt is processed once), their final
answers extracted and normalised, a majority vote; the winning sample is returned and the agreement ratio
is the confidence."""

from __future__ import annotations

from gateway.deliberation.run import Run
from gateway.deliberation.strategy import Engine
from gateway.deliberation.vote import vote

__all__ = ["SelfConsistency"]


class SelfConsistency:
    def prepare(self, run: Run) -> None:
        run.body["n"] = run.plan.samples

    async def refine(self, run: Run, engine: Engine) -> None:
        run.vote = vote([sample.content for sample in run.samples])
        run.chosen = run.vote.winner
