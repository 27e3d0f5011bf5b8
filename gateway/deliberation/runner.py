"""Runs a deliberate chat request: its strategies over the deliberate pool, every engine call streamed so
that reasoning can be relayed as it comes, and stopped at the cap where the engine cannot stop itself."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import replace
from typing import Any, Protocol

import orjson

from engines import TEMPLATE_FIELDS, EnginePool, PooledStream, Usage
from engines.affinity import affinity_key
from gateway.accounting.usage_record import COUNT_TIMEOUT_S, generated_estimate, prompt_estimate
from gateway.deliberation.floor import may_extend
from gateway.deliberation.run import Run, Sample
from gateway.deliberation.splitter import State, ThinkSplitter
from gateway.deliberation.strategy import Strategy, strategies_for
from gateway.deliberation.toolcalls import ToolCallParts
from gateway.http.endpoints import CHAT

# every call streamed with its usage, and with vLLM's count so far on each chunk (`continuous_usage_stats`):
# a call cut short is billed for what the engine counted up to the cut
_STREAM_OPTIONS = {"include_usage": True, "continuous_usage_stats": True}

__all__ = ["Deliberator", "Listener"]


class Listener(Protocol):
    """A client streaming the run as it goes. The first sample is the one it watches: its reasoning as it
    is generated; its answer as well once nothing can discard it (one sample only: with several, the vote
    picks the answer at the end); and, with several samples, the run's progress after each step."""

    def reasoning(self, text: str) -> None: ...

    def content(self, text: str) -> None: ...

    def progress(self, run: Run) -> None: ...


class Deliberator:
    """One request's engine work, told as it goes to `listener` (a streaming client)."""

    def __init__(
        self, pool: EnginePool, engine_model: str, request_id: str, listener: Listener | None = None
    ) -> None:
        self._pool = pool
        self._model = engine_model
        self._request_id = request_id
        self._listener = listener
        self._replica = ""  # the replica that answered last: its tokenizer counts what it generated
        self._before: list[Strategy] = []  # the strategies before the one refining: they refine new samples

    async def run(self, run: Run) -> None:
        strategies = strategies_for(run)
        for strategy in strategies:
            strategy.prepare(run)
        per = run.plan.first_wave
        samples = [Sample(k * per + i, choice=k) for k in range(run.plan.choices) for i in range(per)]
        if run.plan.total_samples > 1:  # every sample of the wave from one call (`n`)
            run.body["n"] = len(samples)
        await self._wave(run, run.body, samples)
        for at, strategy in enumerate(strategies):
            self._before = strategies[:at]
            await strategy.refine(run, self)
            self._progress(run)

    async def draw(self, run: Run, wanted: dict[int, int]) -> None:
        """Another wave: `wanted[k]` new samples for choice k, from one call (its own seed: a seeded engine
        would repeat the first wave), refined by the strategies before the one asking."""
        samples: list[Sample] = []
        for choice, count in wanted.items():
            for _ in range(count):
                samples.append(Sample(len(run.samples) + len(samples), choice=choice))
        if not samples:
            return
        body = {**run.body, "n": len(samples), "seed": self._seed(run, samples[0].index)}
        await self._wave(run, body, samples)
        for strategy in self._before:
            await strategy.refine(run, self)
            self._progress(run)

    async def _wave(self, run: Run, body: dict[str, Any], samples: list[Sample]) -> None:
        run.samples.extend(samples)
        run.drawing = samples
        run.waves += 1
        first = _continued(body, run.opening) if run.opening else body
        state: State = "inside" if run.opening else "before"
        if self._gateway_caps(run) and len(samples) > 1:
            # the gateway stops each sample at the cap by closing its stream: one stream per sample, each
            # with a seed of its own but the run's first (a seeded engine would give them all one answer)
            singles = [
                {**first, "n": 1, **({"seed": self._seed(run, sample.index)} if sample.index else {})}
                for sample in samples
            ]
            await asyncio.gather(
                *(
                    self._call(run, single, [sample], state)
                    for single, sample in zip(singles, samples, strict=True)
                )
            )
        else:
            await self._call(run, first, samples, state)
        self._progress(run)

    def _seed(self, run: Run, at: int) -> int:
        """The seed of a call that starts at sample `at` (a later wave, or one sample's own stream): the
        client's offset by `at` (reproducible), else one drawn from the request id."""
        seed = run.body.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return (seed + at) % (1 << 63)
        digest = hashlib.blake2b(f"{self._request_id}/{at}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1

    def _progress(self, run: Run) -> None:
        if self._listener is not None and run.plan.total_samples > 1:
            self._listener.progress(run)

    async def extend(self, run: Run, sample: Sample, *, close: bool) -> None:
        s = run.settings
        opening = run.opening or s.think_open
        if close:
            assistant = f"{opening}{sample.reasoning}{s.think_close}\n\n"
        else:
            cue = f"\n{s.cue}"
            sample.reasoning += cue
            sample.extensions += 1
            if self._listener is not None and sample is run.samples[0]:
                self._listener.reasoning(cue)
            assistant = f"{opening}{sample.reasoning}"
        body = {**_continued(run.body, assistant), "n": 1}
        remaining = run.plan.remaining(sample.generated)
        if remaining is not None:  # the sample's output bound holds over all its calls
            body["max_completion_tokens"] = max(1, remaining)
        body.pop("thinking_token_budget", None)
        limit = run.plan.reasoning_limit(sample.reasoning_tokens, sample.generated)
        if s.engine_caps_thinking and limit is not None and not close:
            # vLLM counts the reasoning already in the continued message against the budget: the whole cap
            body["thinking_token_budget"] = limit
        await self._call(run, body, [sample], "after" if close else "inside")

    def _gateway_caps(self, run: Run) -> bool:
        return run.plan.gateway_caps

    async def _call(self, run: Run, body: dict[str, Any], samples: list[Sample], state: State) -> None:
        """One engine call, streamed; its choices grow `samples` (choice i -> samples[i])."""
        s = run.settings
        payload = orjson.dumps({**body, "stream": True, "stream_options": _STREAM_OPTIONS})
        splitters = (
            [ThinkSplitter(s.think_open, s.think_close, state) for _ in samples]
            if s.reasoning == "prompted"
            else None
        )
        got = _Got(len(samples))
        live = _Live(self._listener, run, samples) if self._listener is not None else None
        # the gateway's own cap: only while the sample may still think (not when it was told to answer)
        cap = None
        if self._gateway_caps(run) and len(samples) == 1 and state != "after":
            cap = run.plan.reasoning_limit(samples[0].reasoning_tokens, samples[0].generated)
        stream = await self._pool.stream(
            CHAT.path, payload, request_id=self._request_id, affinity=affinity_key(body, chat=True)
        )
        run.replica = self._replica = stream.replica.url
        try:
            stopped = await _read(stream, samples, got, splitters, live, cap)
        except BaseException:
            # the engine failed or the request was cancelled mid-call: what it read and generated is still
            # billed, once the engine has stopped (closing the stream aborts its generation)
            await stream.aclose()
            await self._cut(run, body, payload, samples, got)
            raise
        finally:
            await stream.aclose()
        if splitters is not None:
            for i, splitter in enumerate(splitters):
                more, rest = splitter.finish()
                got.reasoning[i] += more
                got.content[i] += rest
                if live is not None:
                    live.reasoning(i, more)
                    live.content(i, rest, got)
        # stopped at the cap, the call has no final usage: the engine's counts up to the cut (vLLM's
        # continuous usage), else the engine's tokenizer counts what it read and wrote
        usage = got.reported() if stopped else stream.usage
        counts = await self._reasoning_counts(got.reasoning, usage if s.reasoning == "native" else None)
        if usage is None:
            usage = await self._counted_usage(body, counts)
            run.estimated = True
        generated = _per_choice(usage.completion_tokens, counts, got)
        # a choice's reasoning is some of what it generated, never more (its text, tokenized again, may
        # count a token more than the engine wrote)
        counts = [min(count, most) for count, most in zip(counts, generated, strict=True)]
        _keep(samples, got, counts, stopped, prompted=splitters is not None)
        for sample, tokens in zip(samples, generated, strict=True):
            sample.generated += tokens
        run.calls.append(_read_per_choice(usage, len(samples)))

    async def _cut(
        self, run: Run, body: dict[str, Any], payload: bytes, samples: list[Sample], got: _Got
    ) -> None:
        """The usage of a call cut short by a client that left or an engine that failed: the engine's own
        counts up to the cut when it reported them as it went; else its tokenizer's count of the prompt it
        read and the text it wrote (about four characters a token when it does not answer); nothing when
        nothing came (vLLM counts a prompt with the first token it generates, which it sends at once)."""
        reported = got.reported()
        if reported is not None:
            estimated = [_estimate(text) for text in got.reasoning]
            generated = _per_choice(reported.completion_tokens, estimated, got)
            # all that a choice without an answer generated is reasoning; an answer's reasoning is estimated
            counts = [
                0 if not got.reasoning[i] else min(estimate, most) if got.answered(i) else most
                for i, (estimate, most) in enumerate(zip(estimated, generated, strict=True))
            ]
            _keep(samples, got, counts, False)
            run.calls.append(_read_per_choice(replace(reported, reasoning_tokens=sum(counts)), len(samples)))
            return
        if not any(got.reasoning) and not any(got.answered(i) for i in range(len(samples))):
            _keep(samples, got, [0] * len(samples), False)
            return
        reasoning = [_estimate(text) for text in got.reasoning]
        _keep(samples, got, reasoning, False)
        written = sum(reasoning) + sum(_estimate(text) for text in got.content) + got.tool_estimate()
        estimate = Usage(prompt_estimate(len(payload)), written, reasoning_tokens=sum(reasoning))
        at = len(run.calls)
        run.calls.append(_read_per_choice(estimate, len(samples)))
        run.estimated = True
        # then the engine's own tokenizer, if it answers soon (a second cancellation keeps the estimate)
        counted = await asyncio.gather(*(self._count(text) for text in (*got.reasoning, *got.content)))
        prompt = await self._count_prompt(body)
        exact = Usage(
            prompt if prompt is not None else estimate.prompt_tokens,
            sum(counted) + got.tool_estimate(),
            reasoning_tokens=sum(counted[: len(samples)]),
        )
        run.calls[at] = _read_per_choice(exact, len(samples))

    async def _reasoning_counts(self, texts: list[str], usage: Usage | None) -> list[int]:
        """Each choice's new reasoning tokens: the engine's usage when it says (one choice), else the
        engine's tokenizer, else about four characters a token."""
        # vLLM reports 0 when the <think> was in the prompt (a template's generation prompt, every
        # continuation): a count of 0 for reasoning text that exists is no count
        if usage is not None and usage.reasoning_tokens and len(texts) == 1:
            return [usage.reasoning_tokens]
        return list(await asyncio.gather(*(self._count(text) for text in texts)))

    async def _count(self, text: str) -> int:
        if not text:
            return 0
        engine = self._engine()
        counted = None
        if engine is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COUNT_TIMEOUT_S):
                    counted = await engine.count_tokens(self._model, prompt=text)
        return counted if counted is not None else _estimate(text)

    async def _counted_usage(self, body: dict[str, Any], generated: list[int]) -> Usage:
        """The usage of a call the gateway cut short with no counts from the engine: its prompt (rendered as
        the call rendered it: a continued turn has no generation prompt) and what it generated."""
        prompt = await self._count_prompt(body)
        if prompt is None:
            prompt = prompt_estimate(len(orjson.dumps(body.get("messages"))))
        return Usage(prompt_tokens=prompt, completion_tokens=sum(generated), reasoning_tokens=sum(generated))

    async def _count_prompt(self, body: dict[str, Any]) -> int | None:
        """A call's prompt tokens by the engine's tokenizer, its messages rendered as the call had them
        rendered; None when it does not answer soon."""
        engine = self._engine()
        if engine is None:
            return None
        template = {key: body[key] for key in TEMPLATE_FIELDS if key in body}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(COUNT_TIMEOUT_S):
                count: int | None = await engine.count_tokens(
                    self._model, messages=body.get("messages"), template=template
                )
                return count
        return None

    def _engine(self) -> Any:
        replica = self._pool.replica(self._replica)
        return replica.engine if replica is not None else None


class _Live:
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

    def content(self, i: int, text: str, got: _Got) -> None:
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


class _Got:
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
        return sum(_estimate_chars(tools.chars) for tools in self.tools)

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


async def _read(
    stream: PooledStream,
    samples: list[Sample],
    got: _Got,
    splitters: list[ThinkSplitter] | None,
    live: _Live | None,
    cap: int | None,
) -> bool:
    """Read a call's stream into `got`; True when it was stopped at the cap."""
    async for event in stream:
        choices = event.payload.get("choices") or ()
        for choice in choices:
            i = choice.get("index", 0)
            if not isinstance(i, int) or not 0 <= i < len(samples):
                continue
            if len(choices) == 1:  # the chunk's usage is its choice's (vLLM sends one choice a chunk)
                got.observe_usage(event.payload.get("usage"), i)
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


def _per_choice(completion: int, reasoning: list[int], got: _Got) -> list[int]:
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


def _read_per_choice(usage: Usage, choices: int) -> Usage:
    """A call's usage as the engine worked it: vLLM reads the prompt once for each of a call's `n` choices
    (its `vllm:prompt_tokens_total` grows by n x the prompt; its usage reports the prompt once)."""
    if choices == 1:
        return usage
    return replace(
        usage, prompt_tokens=usage.prompt_tokens * choices, cached_tokens=usage.cached_tokens * choices
    )


def _estimate(text: str) -> int:
    return generated_estimate(len(text))


def _estimate_chars(chars: int) -> int:
    return generated_estimate(chars)


def _keep(
    samples: list[Sample], got: _Got, counts: list[int], stopped: bool, *, prompted: bool = False
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


def _continued(body: dict[str, Any], assistant: str) -> dict[str, Any]:
    """`body` with an assistant turn begun as `assistant`, for the engine to continue (not to start anew)."""
    return {
        **body,
        "messages": [*body.get("messages", []), {"role": "assistant", "content": assistant}],
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
