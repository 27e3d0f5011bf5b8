"""Runs a deliberate chat request: its strategies over the deliberate pool, every engine call streamed so
that reasoning can be relayed as it comes, and stopped at the cap where the engine cannot stop itself."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any, Protocol

import orjson

from engines import EnginePool, PooledStream, Usage
from engines.affinity import affinity_key
from gateway.accounting.usage_record import COUNT_TIMEOUT_S, generated_estimate, prompt_estimate
from gateway.deliberation.floor import may_extend
from gateway.deliberation.run import Run, Sample
from gateway.deliberation.splitter import State, ThinkSplitter
from gateway.deliberation.strategy import Strategy, strategies_for
from gateway.deliberation.toolcalls import ToolCallParts
from gateway.http.endpoints import CHAT

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
        payload = orjson.dumps({**body, "stream": True, "stream_options": {"include_usage": True}})
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
            # the engine failed or the request was cancelled mid-call: what it generated is still billed
            reasoning = [_estimate(text) for text in got.reasoning]
            _keep(samples, got, reasoning, False)
            generated = sum(reasoning) + sum(_estimate(text) for text in got.content)
            cut = Usage(prompt_estimate(len(payload)), generated, reasoning_tokens=sum(reasoning))
            run.calls.append(cut)
            run.estimated = True
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
        usage = None if stopped else stream.usage
        counts = await self._reasoning_counts(got.reasoning, usage if s.reasoning == "native" else None)
        _keep(samples, got, counts, stopped, prompted=splitters is not None)
        if usage is None:
            usage = await self._counted_usage(body, counts)
            run.estimated = True
        for sample, generated in zip(samples, _per_choice(usage.completion_tokens, counts, got), strict=True):
            sample.generated += generated
        run.calls.append(usage)

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
        """The usage of a call the gateway cut short (no usage came): its prompt and what it generated."""
        engine = self._engine()
        prompt = None
        if engine is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COUNT_TIMEOUT_S):
                    prompt = await engine.count_tokens(self._model, messages=body.get("messages"))
        if prompt is None:
            prompt = prompt_estimate(len(orjson.dumps(body.get("messages"))))
        return Usage(prompt_tokens=prompt, completion_tokens=sum(generated), reasoning_tokens=sum(generated))

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
    """What one call generated so far, per choice."""

    __slots__ = ("content", "deltas", "live", "logprobs", "reasoning", "tools")

    def __init__(self, choices: int) -> None:
        self.reasoning = [""] * choices
        self.content = [""] * choices
        self.deltas = [0] * choices  # reasoning deltas: about a token each
        self.live = [0] * choices  # characters of content told to the listener
        self.tools = [ToolCallParts() for _ in range(choices)]
        self.logprobs: list[list[dict[str, Any]]] = [[] for _ in range(choices)]  # of the answer's tokens

    def answered(self, i: int) -> bool:
        """Whether choice `i` is past its reasoning: it began an answer, in text or as a tool call."""
        return bool(self.content[i]) or self.tools[i].chars > 0

    def answer_chars(self, i: int) -> int:
        return len(self.content[i]) + self.tools[i].chars


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
        for choice in event.payload.get("choices") or ():
            i = choice.get("index", 0)
            if not isinstance(i, int) or not 0 <= i < len(samples):
                continue
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
    """A call's completion tokens by choice: each choice's reasoning, and what is left split by the share of
    answer text (exact for one choice, which is every call but a self-consistency run's first)."""
    if len(reasoning) == 1:
        return [max(completion, reasoning[0])]
    answers = max(0, completion - sum(reasoning))
    chars = [got.answer_chars(i) for i in range(len(reasoning))]
    total = sum(chars)
    # rounded up: a sample's bound must not be passed by a rounding
    return [r + (-(-answers * c // total) if total else 0) for r, c in zip(reasoning, chars, strict=True)]


def _estimate(text: str) -> int:
    return generated_estimate(len(text))


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
