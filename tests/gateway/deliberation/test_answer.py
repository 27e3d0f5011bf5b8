"""AnswerMissing: which samples are sent back to answer from their reasoning, and how."""

from __future__ import annotations

from gateway.deliberation.answer import AnswerMissing
from gateway.deliberation.plan import DepthPlan
from gateway.deliberation.run import Run, Sample
from gateway.deliberation.strategy import strategies_for
from gateway.settings import DeliberationSettings


class Answering:
    """An engine whose every continuation answers "42"; it remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, bool]] = []

    async def extend(self, run: Run, sample: Sample, *, close: bool) -> None:
        self.asked.append((sample.index, close))
        sample.content, sample.finish_reason = "42", "stop"

    async def draw(self, run: Run, wanted: dict[int, int]) -> None:
        raise AssertionError("no strategy but the vote draws samples")


def run_of(*samples: Sample) -> Run:
    plan = DepthPlan("medium", floor=0, cap=None, samples=len(samples), max_extensions=0)
    return Run(plan, DeliberationSettings(), {"messages": []}, samples=list(samples), drawing=list(samples))


async def test_a_sample_that_stopped_inside_its_reasoning_is_asked_to_answer() -> None:
    samples = (
        Sample(0, reasoning="17 has no divisors but 1 and itself", finish_reason="stop"),  # no answer
        Sample(1, reasoning="thought", content="\n\n", finish_reason="stop"),  # blank is no answer
        Sample(2, reasoning="thought", content="Yes.", finish_reason="stop"),  # answered
        Sample(3, reasoning="thought", finish_reason="length"),  # no room left: nothing to ask
        Sample(4, reasoning="thought", capped=True),  # the cap's to answer
        Sample(5, finish_reason="stop"),  # said nothing at all: nothing to answer from
    )
    run, engine = run_of(*samples), Answering()
    await AnswerMissing().refine(run, engine)
    assert sorted(engine.asked) == [(0, True), (1, True)]  # closed: answer, do not think on
    assert [sample.content for sample in samples[:3]] == ["42", "42", "Yes."]


async def test_every_deliberation_ends_with_it_after_the_floor_and_before_the_vote() -> None:
    plan = DepthPlan("high", floor=10, cap=100, samples=3, max_extensions=2)
    kinds = [type(s).__name__ for s in strategies_for(Run(plan, DeliberationSettings(), {}))]
    assert kinds == ["DepthCap", "DepthFloor", "AnswerMissing", "SelfConsistency"]
