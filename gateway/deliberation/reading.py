"""One deliberation call's stream read into its samples: the reasoning and the answer of each choice, what
the engine counted as it went, what the listener is told as it comes, and the call's tokens by choice."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from engines import PooledStream, Usage
from gateway.accounting.usage_record import generated_estimate
from gateway.deliberation.floor import may_extend
from gateway.deliberation.run import Run, Sample
from gateway.deliberation.splitter import ThinkSplitter
from gateway.deliberation.toolcalls import ToolCallParts

__all__ = [
    "Got",
    "Listener",
    "Live",
    "completion_per_choice",
    "estimate_chars",
    "keep_output",
    "prompt_per_choice",
    "read_call",
    "text_estimate",
]


class Listener(Protocol):
    """A client streaming the run as it goes. The first sample is the one it watches: its reasoning as it
    is generated; its answer as well once nothing can discard it (one sample only: with several, the vote
    picks the answer at the end); and, with several samples, the run's progress after each step."""

    def reasoning(self, text: str) -> None: ...

    def content(self, text: str) -> None: ...

    def progress(self, run: Run) -> None: ...


class Live:
    """What of one call the listener is told: the watched sample's reasoning, and its answer once it is final
    (a sample that may still be extended to the floor gets its answer discarded: that one is held back)."""

    __slots__ = ("_at", "_listener", "_run")

    def __init__(self, listener: Listener, run: Run, samples: list[Sample]) -> None:
        self._listener = listener
        self._run = run
        watched = run.samples[0]
        self._at = next((i for i, sample in enumerate(samples) if sample is watched), -1)

    def reasoning(self, i: int, text: str) -> None:
        if i == self._at and text:
            self._listener.reasoning(text)

    def content(self, i: int, text: str, got: Got) -> None:
        run = self._run
        if i != self._at or not text or run.plan.total_samples > 1:
            return
        sample = run.samples[0]
        # reasoning deltas are at most as many as its tokens: a lower bound, so "cannot extend" is sure
        if may_extend(run.plan, sample.reasoning_tokens + got.deltas[i], sample.extensions, sample.generated):
            return  # held back: it may yet be discarded
        pending = got.content[i][got.live[i] :]  # what was held back before, and this
        got.live[i] = len(got.content[i])
        if not run.live_content and run.settings.reasoning == "prompted":
            pending = pending.lstrip("\n")  # as the kept answer is: from its first word
        if pending:
            run.live_content += pending
            self._listener.content(pending)


class Got:
    """What one call generated so far, per choice, and what the engine said it counted."""

    __slots__ = ("completion", "content", "deltas", "live", "logprobs", "prompt", "reasoning", "tools")

    def __init__(self, choices: int) -> None:
        self.reasoning = [""] * choices
        self.content = [""] * choices
        self.deltas = [0] * choices  # reasoning deltas: about a token each
        self.live = [0] * choices  # characters of content told to the listener
        self.tools = [ToolCallParts() for _ in range(choices)]
        self.logprobs: list[list[dict[str, Any]]] = [[] for _ in range(choices)]  # of the answer's tokens
        # the engine's counts so far (vLLM's continuous usage: every chunk carries its choice's tokens)
        self.prompt: int | None = None
        self.completion: list[int | None] = [None] * choices

    def answered(self, i: int) -> bool:
        """Whether choice `i` is past its reasoning: it began an answer, in text or as a tool call."""
        return bool(self.content[i]) or self.tools[i].chars > 0

    def answer_chars(self, i: int) -> int:
        return len(self.content[i]) + self.tools[i].chars

    def tool_estimate(self) -> int:
        return sum(estimate_chars(tools.chars) for tools in self.tools)

    def observe_usage(self, usage: Any, i: int) -> None:
        """A chunk's usage, when the engine reports it on every chunk: its choice's tokens so far."""
        if not isinstance(usage, dict):
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            self.prompt = prompt
            self.completion[i] = completion

    def reported(self) -> Usage | None:
        """What the engine counted up to the last chunk read; None when it reported nothing as it went."""
        if self.prompt is None:
            return None
        return Usage(self.prompt, sum(count or 0 for count in self.completion))


async def read_call(
    stream: PooledStream,
    samples: list[Sample],
    got: Got,
    splitters: list[ThinkSplitter] | None,
    live: Live | None,
    cap: int | None,
) -> bool:
    """Read a call's stream into `got`; True when it was stopped at the cap."""
    async for _, payload in stream:
        choices = payload.get("choices") or ()
        for choice in choices:
            i = choice.get("index", 0)
            if not isinstance(i, int) or not 0 <= i < len(samples):
                continue
            if len(choices) == 1:  # the chunk's usage is its choice's (vLLM sends one choice a chunk)
                got.observe_usage(payload.get("usage"), i)
            delta = choice.get("delta") or {}
            thought = delta.get("reasoning") or delta.get("reasoning_content") or ""
            said = delta.get("content") or ""
            if splitters is not None and said:
                more, said = splitters[i].feed(said)
                thought += more
            if thought:
                got.reasoning[i] += thought
                got.deltas[i] += 1
                if live is not None:
                    live.reasoning(i, thought)
            got.content[i] += said
            if "tool_calls" in delta:
                got.tools[i].feed(delta["tool_calls"])
            logprobs = choice.get("logprobs")
            if not thought and isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
                got.logprobs[i].extend(logprobs["content"])  # the answer's tokens (or a tool call's)
            if live is not None:
                live.content(i, said, got)
            if choice.get("finish_reason"):
                samples[i].finish_reason = choice["finish_reason"]
        if cap is not None and not got.answered(0) and samples[0].reasoning_tokens + got.deltas[0] >= cap:
            return True  # closing the stream (the caller does) aborts the engine's generation
    return False


def completion_per_choice(completion: int, reasoning: list[int], got: Got) -> list[int]:
    """A call's completion tokens by choice: the engine's own count of each when it reported them as it
    went; else what is left after each choice's reasoning split by the share of answer text (exact for one
    choice, which is every call but a self-consistency run's first)."""
    choices = len(got.completion)
    if choices == 1:
        return [completion]
    if all(count is not None for count in got.completion):
        return [count or 0 for count in got.completion]
    if sum(reasoning) > completion:  # texts tokenized again may count more than the engine wrote
        reasoning = [count * completion // sum(reasoning) for count in reasoning]
    answers = max(0, completion - sum(reasoning))
    chars = [got.answer_chars(i) for i in range(choices)]
    total = sum(chars)
    # rounded up: a sample's bound must not be passed by a rounding
    return [r + (-(-answers * c // total) if total else 0) for r, c in zip(reasoning, chars, strict=True)]


def prompt_per_choice(usage: Usage, choices: int) -> Usage:
    """A call's usage as the engine worked it: vLLM reads the prompt once for each of a call's `n` choices
    (its `vllm:prompt_tokens_total` grows by n x the prompt; its usage reports the prompt once)."""
    if choices == 1:
        return usage
    return replace(
        usage, prompt_tokens=usage.prompt_tokens * choices, cached_tokens=usage.cached_tokens * choices
    )


def text_estimate(text: str) -> int:
    return generated_estimate(len(text))


def estimate_chars(chars: int) -> int:
    return generated_estimate(chars)


def keep_output(
    samples: list[Sample], got: Got, counts: list[int], stopped: bool, *, prompted: bool = False
) -> None:
    """A call's output into its samples: reasoning appended, the answer (text, tool calls, their logprobs)
    replaced."""
    for i, (sample, count) in enumerate(zip(samples, counts, strict=True)):
        sample.reasoning += got.reasoning[i]
        said = got.content[i]
        # a prompted model writes "</think>\n\n" before its answer: the answer starts at its first word
        sample.content = said.lstrip("\n") if prompted else said
        sample.tool_calls = got.tools[i].calls()
        sample.logprobs = got.logprobs[i]
        sample.reasoning_tokens += count
        sample.capped = stopped
        if stopped:
            sample.finish_reason = None
