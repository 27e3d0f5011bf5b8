"""What the runner bills for each engine call: the engine's own counts whenever it gave them (its final
usage, or the usage vLLM puts on every chunk with `continuous_usage_stats`), else the engine's tokenizer with
the call's own rendering flags; reasoning never above the tokens generated."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from engines import StreamEvent, Usage
from gateway.deliberation.plan import DepthPlan
from gateway.deliberation.run import Run
from gateway.deliberation.runner import Deliberator
from gateway.settings import DeliberationSettings

PROMPTED = DeliberationSettings(reasoning="prompted", engine_caps_thinking=False)


class Tokenizer:
    """The engine's /tokenize: a prompt of `prompt` tokens, a text of one token a character; it remembers
    how each prompt was to be rendered."""

    def __init__(self, prompt: int = 56) -> None:
        self.prompt = prompt
        self.templates: list[dict[str, Any]] = []

    async def count_tokens(
        self,
        model: str,
        *,
        prompt: str | None = None,
        messages: Any = None,
        template: Mapping[str, Any] | None = None,
    ) -> int | None:
        if messages is not None:
            self.templates.append(dict(template or {}))
            return self.prompt
        return len(prompt or "")


@dataclass
class Replica:
    url: str
    engine: Tokenizer


@dataclass
class Script:
    """One engine call: its chunks, its final usage, and whether it then hangs (until cancelled)."""

    chunks: list[dict[str, Any]]
    usage: Usage | None = None
    hang: bool = False


@dataclass
class FakeStream:
    script: Script
    replica: Replica
    usage: Usage | None = None
    usage_chunks: int = 0
    closed: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # every chunk read: it hangs now
    _at: int = 0

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._at < len(self.script.chunks):
            payload = self.script.chunks[self._at]
            self._at += 1
            return orjson.dumps(payload), payload
        if self.script.hang:
            self.drained.set()
            await asyncio.Event().wait()
        self.usage = self.script.usage
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Pool:
    scripts: list[Script]
    tokenizer: Tokenizer = field(default_factory=Tokenizer)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    opened: list[FakeStream] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def stream(
        self,
        path: str,
        payload: bytes,
        *,
        request_id: str,
        affinity: str | None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> FakeStream:
        self.bodies.append(orjson.loads(payload))
        self.opened.append(FakeStream(self.scripts.pop(0), Replica("http://engine", self.tokenizer)))
        self.called.set()
        return self.opened[-1]

    async def read_all(self) -> None:
        """Until the open call's chunks have all been read (it hangs then), with a generous deadline."""
        async with asyncio.timeout(30):
            await self.called.wait()
            await self.opened[-1].drained.wait()

    def replica(self, url: str) -> Replica:
        return Replica(url, self.tokenizer)


def chunk(i: int = 0, usage: tuple[int, int] | None = None, **delta: str) -> dict[str, Any]:
    body: dict[str, Any] = {"choices": [{"index": i, "delta": delta, "finish_reason": None}]}
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
    return body


def finish(i: int = 0, reason: str = "stop", **delta: str) -> dict[str, Any]:
    return {"choices": [{"index": i, "delta": delta, "finish_reason": reason}]}


def capped_plan(cap: int = 5) -> DepthPlan:
    return DepthPlan("low", floor=0, cap=cap, samples=1, max_extensions=0, output=100, gateway_caps=True)


async def deliberate(pool: Pool, plan: DepthPlan, settings: DeliberationSettings) -> Run:
    run = Run(
        plan, settings, {"model": "m", "messages": [{"role": "user", "content": "Why is the sea salty?"}]}
    )
    await Deliberator(pool, "m", "req").run(run)  # type: ignore[arg-type]
    return run


async def test_a_call_stopped_at_the_cap_recounts_its_prompt_as_the_engine_read_it() -> None:
    """An engine that reports no usage as it goes: the prompt it read ended in the continued `<think>\\n`
    turn (continue_final_message, no generation prompt), and /tokenize is asked to render it so."""
    thinking = Script([chunk(content="a") for _ in range(8)], hang=True)  # the cap stops it after 5
    answer = Script([finish(content="Yes.")], usage=Usage(70, 4))
    pool = Pool([thinking, answer])
    run = await deliberate(pool, capped_plan(), PROMPTED)
    assert pool.bodies[0]["continue_final_message"] is True
    assert pool.bodies[0]["add_generation_prompt"] is False
    assert pool.tokenizer.templates == [{"continue_final_message": True, "add_generation_prompt": False}]
    assert run.calls == [Usage(56, 5, reasoning_tokens=5), Usage(70, 4)]
    assert run.estimated
    assert run.answer.content == "Yes." and run.answer.reasoning_tokens == 5


async def test_a_call_stopped_at_the_cap_is_billed_by_the_engines_own_counts() -> None:
    """vLLM's continuous usage: the counts up to the cut are the engine's, no recount, nothing estimated."""
    thinking = Script([chunk(usage=(56, k + 1), content="a") for k in range(8)], hang=True)
    answer = Script([finish(content="Yes.")], usage=Usage(70, 4))
    pool = Pool([thinking, answer])
    run = await deliberate(pool, capped_plan(), PROMPTED)
    assert pool.bodies[0]["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert run.calls == [Usage(56, 5), Usage(70, 4)]
    assert pool.tokenizer.templates == [] and not run.estimated
    assert run.answer.reasoning_tokens == 5


async def test_reasoning_never_counts_above_what_the_call_generated() -> None:
    """Reasoning text tokenized again may count more than the engine wrote (201 for 200): held to 200."""
    plan = DepthPlan("low", floor=0, cap=None, samples=1, max_extensions=0, output=200)
    thinking = [chunk(reasoning="ab") for _ in range(100)] + [chunk(reasoning="c"), finish(reason="length")]
    pool = Pool([Script(thinking, usage=Usage(40, 200, reasoning_tokens=0))])
    run = await deliberate(pool, plan, DeliberationSettings())
    assert run.answer.reasoning_tokens == 200  # its 201 characters are 201 tokens to the tokenizer
    usage = run.usage()
    assert usage is not None and usage.completion_tokens == 200 and usage.reasoning_tokens == 200
    assert run.depth_fields()["reasoning_tokens"] == 200


@pytest.mark.parametrize("reported", [True, False], ids=["continuous usage", "no usage"])
async def test_a_call_cut_by_a_client_that_left_bills_what_the_engine_read_and_wrote(reported: bool) -> None:
    counts = iter([(51, 0), (51, 1), (51, 2), (51, 3)])
    chunks = [
        chunk(usage=next(counts) if reported else None, reasoning=r) for r in ("", "The", " sea", " is")
    ]
    pool = Pool([Script(chunks, hang=True)])
    plan = DepthPlan("low", floor=0, cap=None, samples=1, max_extensions=0, output=200)
    run = Run(
        plan, DeliberationSettings(), {"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}
    )
    task = asyncio.create_task(Deliberator(pool, "m", "req").run(run))  # type: ignore[arg-type]
    await pool.read_all()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.opened[0].closed
    if reported:  # the engine's counts at the last chunk read: the prompt it read, the 3 tokens it wrote
        assert run.calls == [Usage(51, 3, reasoning_tokens=3)] and not run.estimated
    else:  # its tokenizer: the prompt (not the request's size), the text (one token a character here)
        assert run.calls == [Usage(56, len("The sea is"), reasoning_tokens=len("The sea is"))]
        assert run.estimated
        assert pool.tokenizer.templates == [{}]  # the first call's prompt: the generation prompt's default


async def test_a_call_cut_before_anything_came_bills_nothing() -> None:
    pool = Pool([Script([], hang=True)])
    plan = DepthPlan("low", floor=0, cap=None, samples=1, max_extensions=0, output=200)
    run = Run(plan, DeliberationSettings(), {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    task = asyncio.create_task(Deliberator(pool, "m", "req").run(run))  # type: ignore[arg-type]
    await pool.read_all()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert run.calls == [] and run.usage() is None  # vLLM counts a prompt with its first token: none came


async def test_several_samples_in_one_call_read_the_prompt_once_each() -> None:
    """vLLM reads the prompt once per sequence of `n` (its counter grows by n x the prompt); its usage says
    the prompt once. Each choice's completion is its own count from its chunks' usage."""
    plan = DepthPlan("low", floor=0, cap=None, samples=3, max_extensions=0, output=100)
    chunks: list[dict[str, Any]] = []
    for i, (reasoning, answer, tokens) in enumerate([("ab", "4", 3), ("abcd", "4", 5), ("a", "5", 2)]):
        chunks += [
            chunk(i, usage=(40, tokens - 1), reasoning=reasoning),
            chunk(i, usage=(40, tokens), content=answer),
        ]
        chunks.append(finish(i))
    pool = Pool([Script(chunks, usage=Usage(40, 10))])
    run = await deliberate(pool, plan, DeliberationSettings())
    assert pool.bodies[0]["n"] == 3
    usage = run.usage()
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (120, 10)
    assert [sample.generated for sample in run.samples] == [3, 5, 2]
    assert [sample.reasoning_tokens for sample in run.samples] == [2, 4, 1]
