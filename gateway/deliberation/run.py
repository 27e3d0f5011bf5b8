"""The state of one deliberation: its samples as they grow, and every engine call's usage."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from engines import Usage
from gateway.deliberation.audit import DeliveredDepth, RequestedDepth, shortfalls
from gateway.deliberation.plan import DepthPlan
from gateway.deliberation.vote import Vote
from gateway.settings import DeliberationSettings
from pricing import Depth

__all__ = ["Run", "Sample"]

log = logging.getLogger("tiergate.deliberation")


@dataclass(slots=True)
class Sample:
    index: int  # its place in the run's samples
    choice: int = 0  # the request's choice (of `n`) it is a sample of
    reasoning: str = ""
    content: str = ""
    reasoning_tokens: int = 0
    generated: int = 0  # every token the engines generated for it, over all its calls (the plan's output)
    extensions: int = 0
    finish_reason: str | None = None
    capped: bool = False  # the gateway stopped its reasoning at the cap; it has no answer yet
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # its answer's, in OpenAI's shape
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # of its answer's tokens, when asked


@dataclass(slots=True)
class Run:
    plan: DepthPlan
    settings: DeliberationSettings
    body: dict[str, Any]  # the first engine request (strategies prepare it)
    # the start of the assistant's turn, for the engine to continue ("" : the engine's generation prompt)
    opening: str = ""
    samples: list[Sample] = field(default_factory=list)
    calls: list[Usage] = field(default_factory=list)  # every engine call's usage, counted if it had none
    replica: str = ""  # the last replica that answered
    # with `n` choices, each sample says whose it is (`Sample.choice`); adaptive votes draw them in waves
    drawing: list[Sample] = field(default_factory=list)  # the last wave: what the depth strategies work on
    waves: int = 0  # engine calls that drew new samples (one without adaptive self-consistency)
    votes: list[Vote] = field(default_factory=list)  # a vote per choice, with self-consistency
    winners: list[int] = field(default_factory=list)  # the sample each choice delivers (default: its first)
    estimated: bool = False  # some call's usage was counted by the gateway (it was cut short)
    live_content: str = ""  # of the first sample's answer, what a streaming client was sent as it came
    # every strategy ran to its end: only then is the depth audited (a run cut by its client or a failing
    # engine is billed by its floor, as it stands, and blames no engine)
    complete: bool = False

    @property
    def answers(self) -> list[Sample]:
        """The answer of each choice."""
        if self.winners:
            return [self.samples[winner] for winner in self.winners]
        return [group[0] for group in self.groups() if group]

    @property
    def answer(self) -> Sample:
        return self.answers[0]

    @property
    def chosen(self) -> int:
        """The sample the first choice delivers."""
        return self.winners[0] if self.winners else 0

    def groups(self) -> list[list[Sample]]:
        """The samples of each choice."""
        if not self.samples:
            return []
        return [[s for s in self.samples if s.choice == k] for k in range(self.plan.choices)]

    def answer_reasoning(self) -> int:
        """The delivered sample's reasoning tokens: some of the completion tokens, never more (checked: a
        count above them is a fault of the runner's, logged, and held to them)."""
        if not self.samples:
            return 0
        reasoning = self.answer.reasoning_tokens
        completion = sum(u.completion_tokens for u in self.calls)
        if reasoning > completion:
            log.error(
                "reasoning tokens %d above the completion tokens %d: held to them", reasoning, completion
            )
            return completion
        return reasoning

    def usage(self) -> Usage | None:
        """Every call's tokens together: what the engines did for this request."""
        if not self.calls:
            return None
        completion = sum(u.completion_tokens for u in self.calls)
        reasoning = sum(s.reasoning_tokens for s in self.samples)
        if reasoning > completion:
            log.error(
                "reasoning tokens %d above the completion tokens %d: held to them", reasoning, completion
            )
            reasoning = completion
        return Usage(
            prompt_tokens=sum(u.prompt_tokens for u in self.calls),
            completion_tokens=completion,
            cached_tokens=sum(u.cached_tokens for u in self.calls),
            reasoning_tokens=reasoning,
        )

    def depth(self) -> Depth:
        floor = self.plan.floor
        met = bool(self.samples) and all(s.reasoning_tokens >= floor for s in self.samples)
        return Depth(
            samples=max(1, len(self.samples)),
            extensions=sum(s.extensions for s in self.samples),
            floor=floor,
            floor_met=met,
            agreement=sum(v.agreement for v in self.votes) / len(self.votes) if self.votes else None,
            shortfall=self.shortfall() if self.complete else (),
        )

    def shortfall(self) -> tuple[str, ...]:
        """The depth audit of the samples drawn: what was asked of the engines against what they delivered."""
        plan = self.plan
        asked = RequestedDepth(
            plan.floor,
            plan.cap,
            self.settings.engine_caps_thinking and plan.cap is not None,
            len(self.samples),
        )
        delivered = DeliveredDepth(
            [s.reasoning_tokens for s in self.samples], [s.finish_reason is not None for s in self.samples]
        )
        return shortfalls(asked, delivered)

    def depth_fields(self) -> dict[str, object]:
        """`usage.reasoning_depth` for the client."""
        depth = self.depth()
        return {
            "effort": self.plan.effort,
            "reasoning_tokens": self.answer_reasoning(),
            "samples": depth.samples,
            "extensions": depth.extensions,
            "floor": depth.floor,
            "floor_met": depth.floor_met,
            "cap": self.plan.cap,
            "agreement": depth.agreement,
            # adaptive self-consistency: the most the level draws, and those it did not need (never billed)
            "max_samples": self.plan.total_samples,
            "samples_saved": max(0, self.plan.total_samples - len(self.samples)) if self.samples else 0,
            "shortfall": list(depth.shortfall),  # the depth audit's reasons: any forfeits the premium
        }
