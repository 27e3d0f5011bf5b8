"""What a deliberate request is promised, and within what: the effort level its `reasoning_effort` picks,
bounded by the tokens the request may generate.

A sample's `output` bounds everything the engines generate for it, over all its calls (reasoning, answers
an extension discarded, the answer), as `max_completion_tokens` does on OpenAI's reasoning models: the
client's own bound when it sent one, else the level's cap plus `answer_tokens` (else the model's context).
The cap the run applies is the level's, lowered to leave `min_answer_tokens` of that output for the answer.
A bound below the floor plus that room can never meet the floor: `DepthUnreachable`, unless the request
asked for best-effort depth (then a missed floor bills as the fast tier, as any missed floor does).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings import DeliberationSettings
from gateway.tiers import ReasoningEffort

__all__ = ["CALL_OVERHEAD_TOKENS", "DepthPlan", "DepthUnreachable", "plan_for"]

_ORDER = list(ReasoningEffort)
# what a continuation adds to the prompt besides the reasoning it carries: the assistant turn's template,
# the opening and closing delimiters, the cues spliced in so far
CALL_OVERHEAD_TOKENS = 64


class DepthUnreachable(ValueError):
    """The request's bound on generated tokens leaves no room for the floor and an answer."""

    def __init__(self, effort: str, floor: int, minimum: int, requested: int) -> None:
        super().__init__(
            f"{requested} tokens cannot hold a floor of {floor} and an answer (minimum {minimum})"
        )
        self.effort = effort
        self.floor = floor
        self.minimum = minimum
        self.requested = requested


@dataclass(frozen=True, slots=True)
class DepthPlan:
    effort: str
    floor: int  # reasoning tokens every sample reaches; 0: no floor
    cap: int | None  # reasoning tokens no sample goes beyond
    samples: int
    max_extensions: int
    output: int | None = None  # tokens the engines may generate per sample: over all its calls when pinned
    answer_room: int = 0  # of `output`, kept for the answer: no extension starts without it
    # the gateway sends `output` as each call's bound, less what the sample generated; not pinned (no cap, no
    # bound from the client), each call may generate `output`, what the model's context leaves
    pinned: bool = True
    choices: int = 1  # the request's `n`: independent deliberations, each with `samples` samples
    # a sample stopped at the cap by the gateway (an engine without thinking_token_budget) is closed for an
    # answer by one more call; an engine that caps thinking itself answers in the same call
    gateway_caps: bool = False
    # adaptive self-consistency: `samples` is the most drawn per choice, `wave` at a time, until the vote is
    # settled with `stop_confidence` (gateway/deliberation/adaptive.py)
    adaptive: bool = False
    wave: int = 2
    stop_confidence: float = 0.95

    @property
    def first_wave(self) -> int:
        """The samples per choice the first engine call draws: all of them, unless the vote is adaptive."""
        return min(self.wave, self.samples) if self.adaptive else self.samples

    @property
    def total_samples(self) -> int:
        return self.samples * self.choices

    def remaining(self, generated: int) -> int | None:
        """What a sample that has generated `generated` tokens may still generate (None: unbounded)."""
        if self.output is None or not self.pinned:
            return None
        return max(0, self.output - generated)

    def reasoning_limit(self, reasoning: int, generated: int) -> int | None:
        """The most reasoning a sample may reach from here: the cap, lowered so that what the sample may still
        generate keeps the answer's room (answers an extension discarded spent some of it)."""
        remaining = self.remaining(generated)
        if remaining is None:
            return self.cap
        room = max(reasoning + 1, reasoning + remaining - self.answer_room)
        return room if self.cap is None else min(self.cap, room)

    def output_bound(self) -> int:
        """The most the engines generate for the whole run."""
        per_call = self.output or 0
        return self.total_samples * (per_call if self.pinned else per_call * self.calls_per_sample())

    @property
    def closes(self) -> int:
        """The most calls that close a sample's reasoning for an answer: at the gateway's cap, and once more
        when it still said nothing."""
        return 2 if self.gateway_caps else 1

    def calls_per_sample(self) -> int:
        """The most engine calls one sample makes: its first, every extension to the floor, its closes."""
        return 1 + self.max_extensions + self.closes

    def prompt_bound(self, prompt: int) -> int:
        """The most prompt tokens the engines read for the whole run, per sample: the first call (vLLM reads
        the prompt once for each of a call's `n` choices, as it does for separate calls), each extension
        (the prompt and reasoning below the floor) and each close (the prompt and reasoning up to the cap)."""
        reasoning = self.cap if self.cap is not None else (self.output or 0)
        extension = prompt + min(self.floor, reasoning) + CALL_OVERHEAD_TOKENS
        close = prompt + reasoning + CALL_OVERHEAD_TOKENS
        return self.total_samples * (prompt + self.max_extensions * extension + self.closes * close)


def plan_for(
    settings: DeliberationSettings,
    reasoning_effort: str | None,
    requested: int | None = None,
    context: int | None = None,
    *,
    most: int | None = None,
    unbounded: int,
    best_effort: bool = False,
    choices: int = 1,
) -> DepthPlan:
    """The configured level for the request's effort (an effort with no level of its own takes the nearest
    configured one below it, or above when none is below; no effort takes `default_effort`), bounded by
    `requested` (the client's max_completion_tokens or max_tokens) and `context` (what the model's context
    leaves after the prompt, when known; `unbounded` stands for it when not, for a level without a cap) and
    `most` (the model's max_output_tokens: a default never goes beyond it)."""
    wanted = _effort(reasoning_effort) or settings.default_effort
    levels = settings.efforts
    if wanted not in levels:
        below = [effort for effort in _ORDER[: _ORDER.index(wanted)] if effort in levels]
        above = [effort for effort in _ORDER[_ORDER.index(wanted) :] if effort in levels]
        wanted = below[-1] if below else above[0]
    level = levels[wanted]
    room = settings.min_answer_tokens
    if requested is not None:
        output = requested
        minimum = level.floor + room if level.floor else 0
        if output < minimum and not best_effort:
            raise DepthUnreachable(wanted.value, level.floor, minimum, requested)
    elif level.cap is not None:
        output = level.cap + settings.answer_tokens
        if most is not None:
            output = min(output, most)
    elif most is not None:
        output = most
    else:  # nothing bounds a sample but the engine's context: each call may fill it
        output = context if context is not None else unbounded
        return DepthPlan(
            wanted.value,
            level.floor,
            None,
            level.samples,
            level.max_extensions,
            output,
            room,
            pinned=False,
            choices=choices,
            adaptive=level.adaptive,
            wave=level.wave,
            stop_confidence=level.stop_confidence,
        )
    if context is not None:
        output = min(output, context)
    output = max(output, 1)
    cap = level.cap
    if output > room:  # a cap that leaves the answer its room
        cap = output - room if cap is None else min(cap, output - room)
    # the floor stays the promise: a best-effort bound below it misses it, and is billed so
    return DepthPlan(
        wanted.value,
        level.floor,
        cap,
        level.samples,
        level.max_extensions,
        output,
        room,
        choices=choices,
        gateway_caps=cap is not None and not settings.engine_caps_thinking,
        adaptive=level.adaptive,
        wave=level.wave,
        stop_confidence=level.stop_confidence,
    )


def _effort(value: str | None) -> ReasoningEffort | None:
    try:
        return ReasoningEffort(value) if value is not None else None
    except ValueError:
        return None
