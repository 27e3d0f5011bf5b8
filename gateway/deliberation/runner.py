"""Runs a deliberate chat request: its strategies over the deliberate pool, every engine call streamed so
that reasoning can be relayed as it comes, and stopped at the cap where the engine cannot stop itself."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from engines import TEMPLATE_FIELDS, EnginePool, Usage
from engines.affinity import affinity_key
from gateway.accounting.usage_record import COUNT_TIMEOUT_S, prompt_estimate
from gateway.deliberation.reading import (
    Got,
    Listener,
    Live,
    completion_per_choice,
    keep_output,
    prompt_per_choice,
    read_call,
    text_estimate,
)
from gateway.deliberation.run import Run, Sample
from gateway.deliberation.splitter import State, ThinkSplitter
from gateway.deliberation.strategy import Strategy, strategies_for
from gateway.http.endpoints import CHAT

if TYPE_CHECKING:
    from engines.client import Headers
    from gateway.accounting.tracing import RequestTrace

# every call streamed with its usage, and with vLLM's count so far on each chunk (`continuous_usage_stats`):
# a call cut short is billed for what the engine counted up to the cut
_STREAM_OPTIONS = {"include_usage": True, "continuous_usage_stats": True}

__all__ = ["Deliberator", "Listener"]


class Deliberator:
    """One request's engine work, told as it goes to `listener` (a streaming client); each engine call a
    child span of `trace` (the request's, when tracing is on)."""

    def __init__(
        self,
        pool: EnginePool,
        engine_model: str,
        request_id: str,
        listener: Listener | None = None,
        trace: RequestTrace | None = None,
    ) -> None:
        self._pool = pool
        self._model = engine_model
        self._request_id = request_id
        self._listener = listener
        self._trace = trace
        self._replica = ""  # the replica that answered last: its tokenizer counts what it generated
        self._before: list[Strategy] = []  # the strategies before the one refining: they refine new samples

    async def run(self, run: Run) -> None:
        try:
            await self._run(run)
        finally:
            if self._trace is not None:  # what it delivered, also when it was cut
                self._trace.depth(run.depth_fields())

    async def _run(self, run: Run) -> None:
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
        run.complete = True

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
                    self._call(run, single, [sample], state, "sample")
                    for single, sample in zip(singles, samples, strict=True)
                )
            )
        else:
            await self._call(run, first, samples, state, "wave")
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
        await self._call(
            run, body, [sample], "after" if close else "inside", "close" if close else "extension"
        )

    def _gateway_caps(self, run: Run) -> bool:
        return run.plan.gateway_caps

    async def _call(
        self, run: Run, body: dict[str, Any], samples: list[Sample], state: State, kind: str
    ) -> None:
        """One engine call (`kind`: a `wave`, one `sample`'s stream, an `extension` or the `close`), in a
        span of its own when the request is traced."""
        if self._trace is None:
            await self._engine_call(run, body, samples, state, ())
            return
        with self._trace.call(self._pool.name, self._model, kind=kind, choices=len(samples)) as call:
            reasoning = await self._engine_call(run, body, samples, state, call.headers)
            call.answered(run.replica, run.calls[-1], reasoning=reasoning)  # as billed: n reads of a prompt

    async def _engine_call(
        self, run: Run, body: dict[str, Any], samples: list[Sample], state: State, headers: Headers
    ) -> int:
        """One engine call, streamed; its choices grow `samples` (choice i -> samples[i]). Returns the
        reasoning tokens it generated."""
        s = run.settings
        payload = orjson.dumps({**body, "stream": True, "stream_options": _STREAM_OPTIONS})
        splitters = (
            [ThinkSplitter(s.think_open, s.think_close, state) for _ in samples]
            if s.reasoning == "prompted"
            else None
        )
        got = Got(len(samples))
        live = Live(self._listener, run, samples) if self._listener is not None else None
        # the gateway's own cap: only while the sample may still think (not when it was told to answer)
        cap = None
        if self._gateway_caps(run) and len(samples) == 1 and state != "after":
            cap = run.plan.reasoning_limit(samples[0].reasoning_tokens, samples[0].generated)
        stream = await self._pool.stream(
            CHAT.path,
            payload,
            request_id=self._request_id,
            affinity=affinity_key(body, chat=True),
            headers=headers,
        )
        run.replica = self._replica = stream.replica.url
        try:
            stopped = await read_call(stream, samples, got, splitters, live, cap)
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
        generated = completion_per_choice(usage.completion_tokens, counts, got)
        # a choice's reasoning is some of what it generated, never more (its text, tokenized again, may
        # count a token more than the engine wrote)
        counts = [min(count, most) for count, most in zip(counts, generated, strict=True)]
        keep_output(samples, got, counts, stopped, prompted=splitters is not None)
        for sample, tokens in zip(samples, generated, strict=True):
            sample.generated += tokens
        run.calls.append(prompt_per_choice(usage, len(samples)))
        return sum(counts)

    async def _cut(
        self, run: Run, body: dict[str, Any], payload: bytes, samples: list[Sample], got: Got
    ) -> None:
        """The usage of a call cut short by a client that left or an engine that failed: the engine's own
        counts up to the cut when it reported them as it went; else its tokenizer's count of the prompt it
        read and the text it wrote (about four characters a token when it does not answer); nothing when
        nothing came (vLLM counts a prompt with the first token it generates, which it sends at once)."""
        reported = got.reported()
        if reported is not None:
            estimated = [text_estimate(text) for text in got.reasoning]
            generated = completion_per_choice(reported.completion_tokens, estimated, got)
            # all that a choice without an answer generated is reasoning; an answer's reasoning is estimated
            counts = [
                0 if not got.reasoning[i] else min(estimate, most) if got.answered(i) else most
                for i, (estimate, most) in enumerate(zip(estimated, generated, strict=True))
            ]
            keep_output(samples, got, counts, False)
            run.calls.append(prompt_per_choice(replace(reported, reasoning_tokens=sum(counts)), len(samples)))
            return
        if not any(got.reasoning) and not any(got.answered(i) for i in range(len(samples))):
            keep_output(samples, got, [0] * len(samples), False)
            return
        reasoning = [text_estimate(text) for text in got.reasoning]
        keep_output(samples, got, reasoning, False)
        written = sum(reasoning) + sum(text_estimate(text) for text in got.content) + got.tool_estimate()
        estimate = Usage(prompt_estimate(len(payload)), written, reasoning_tokens=sum(reasoning))
        at = len(run.calls)
        run.calls.append(prompt_per_choice(estimate, len(samples)))
        run.estimated = True
        # then the engine's own tokenizer, if it answers soon (a second cancellation keeps the estimate)
        counted = await asyncio.gather(*(self._count(text) for text in (*got.reasoning, *got.content)))
        prompt = await self._count_prompt(body)
        exact = Usage(
            prompt if prompt is not None else estimate.prompt_tokens,
            sum(counted) + got.tool_estimate(),
            reasoning_tokens=sum(counted[: len(samples)]),
        )
        run.calls[at] = prompt_per_choice(exact, len(samples))

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
        return counted if counted is not None else text_estimate(text)

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


def _continued(body: dict[str, Any], assistant: str) -> dict[str, Any]:
    """`body` with an assistant turn begun as `assistant`, for the engine to continue (not to start anew)."""
    return {
        **body,
        "messages": [*body.get("messages", []), {"role": "assistant", "content": assistant}],
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
