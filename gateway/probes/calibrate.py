"""Calibration by probes, the runs (`tiergate probe --calibrate`): each task once through the fast tier as the
cascade's fast stage asks it (k samples in one `n=k` call, with logprobs, scored by the cascade's own
`confidence.score_samples`) and once through the deliberate tier at one effort, streamed, so that its last
progress chunk tells every sample's answer (`tiergate.progress.votes`). `calibration.calibrate` then sweeps
the thresholds and vote-stopping settings offline: two requests a task, whatever the settings tried."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import httpx
import orjson

from gateway.deliberation.confidence import score_samples
from gateway.deliberation.vote import extract_answer
from gateway.probes.calibration import TaskRecord
from gateway.probes.tasks import ProbeRetries, ProbeTask, retry_delay

__all__ = ["CalibrationRun", "collect"]

_INSTRUCTION = "\nSolve it, and end your reply with 'The answer is N.'"  # as the probes ask (tasks.py)
_RETRYABLE = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class CalibrationRun:
    """A model's tasks as run: the records of those both tiers answered, and how many failed."""

    model: str
    records: list[TaskRecord]
    failed: int
    max_samples: int  # the most samples a deliberation drew (the level's samples)
    short_votes: int  # deliberations that drew fewer: an adaptive level at the gateway, replayed as drawn


async def collect(
    client: httpx.AsyncClient,
    model: str,
    tasks: Sequence[ProbeTask],
    *,
    effort: str,
    samples: int,
    retries: ProbeRetries,
    concurrency: int = 4,
    on_task: Callable[[int, int], None] | None = None,
) -> CalibrationRun:
    """Run every task through `model`'s fast stage (`samples` at once) and its deliberate tier at `effort`."""
    gate = asyncio.Semaphore(concurrency)
    records: list[TaskRecord | None] = []
    drawn: list[tuple[int, int]] = []  # (samples drawn, the level's most) per deliberation

    async def one(task: ProbeTask) -> None:
        messages = [{"role": "user", "content": task.question + _INSTRUCTION}]
        async with gate:
            try:
                fast = await _post(
                    client,
                    {"model": f"{model}:fast", "messages": messages, "n": samples, "logprobs": True},
                    retries,
                )
                deliberate = await _stream(
                    client,
                    {
                        "model": f"{model}:deliberate",
                        "messages": messages,
                        "reasoning_effort": effort,
                        "stream": True,
                        "stream_options": {"include_usage": True},
                    },
                    retries,
                )
            except (httpx.HTTPError, ValueError, LookupError, TypeError):
                records.append(None)
            else:
                records.append(_record(task, fast, deliberate, samples))
                drawn.append((deliberate.samples, deliberate.max_samples))
        if on_task is not None:
            on_task(len(records), len(tasks))

    await asyncio.gather(*(one(task) for task in tasks))
    kept = [record for record in records if record is not None]
    return CalibrationRun(
        model,
        kept,
        failed=len(records) - len(kept),
        max_samples=max((most for _, most in drawn), default=0),
        short_votes=sum(done < most for done, most in drawn),
    )


@dataclass(frozen=True, slots=True)
class _Deliberation:
    content: str
    votes: tuple[str | None, ...]
    samples: int
    max_samples: int
    cost_micros: int
    fees_micros: int  # of it, per request: the request fee and the depth premium


def _record(task: ProbeTask, fast: dict[str, Any], deliberate: _Deliberation, k: int) -> TaskRecord:
    truth = extract_answer(task.answer)
    choices = fast["choices"]
    confidence = score_samples(choices, structured=False)
    usage = fast["usage"]
    amounts = (usage.get("cost_details") or {}).get("amounts_micros") or {}
    # the fast tier bills an n=k call's prompt once, the cascade once a sample (vLLM prefills each); one
    # sample alone: its prompt, the request fee and a k-th of what the k generated
    prompt = int(amounts.get("input") or 0) + int(amounts.get("cached_input") or 0)
    fee = int(amounts.get("request") or 0)
    generated = int(usage.get("cost_micros") or 0) - prompt - fee
    n = max(len(choices), 1)

    def right(choice: dict[str, Any]) -> bool:
        content = (choice.get("message") or {}).get("content") or ""
        return truth is not None and extract_answer(str(content)) == truth

    return TaskRecord(
        confidence=confidence.score,
        fast_correct=right(choices[confidence.chosen]),
        fast_cost=Fraction(n * prompt + fee + generated),
        single_correct=right(choices[0]),
        single_cost=prompt + fee + Fraction(generated, n),
        votes=deliberate.votes,
        truth=truth,
        deliberate_correct=truth is not None and extract_answer(deliberate.content) == truth,
        deliberate_cost=Fraction(deliberate.cost_micros),
        deliberate_fees=Fraction(deliberate.fees_micros),
    )


async def _post(client: httpx.AsyncClient, body: dict[str, Any], retries: ProbeRetries) -> dict[str, Any]:
    attempt, waited = 0, 0.0
    while True:
        response = await client.post("/v1/chat/completions", content=orjson.dumps(body))
        if response.status_code == 200:
            reply: dict[str, Any] = response.json()
            return reply
        delay = await _retry(response, attempt, waited, retries)
        attempt, waited = attempt + 1, waited + delay


async def _stream(client: httpx.AsyncClient, body: dict[str, Any], retries: ProbeRetries) -> _Deliberation:
    """A streamed deliberation: its answer, the answers of its samples (its last progress chunk), its cost."""
    attempt, waited = 0, 0.0
    while True:
        async with client.stream("POST", "/v1/chat/completions", content=orjson.dumps(body)) as response:
            if response.status_code == 200:
                content: list[str] = []
                progress: dict[str, Any] = {}
                usage: dict[str, Any] = {}
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = orjson.loads(line[6:])
                    progress = (chunk.get("tiergate") or {}).get("progress") or progress
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or ():
                        if choice.get("index", 0) == 0:
                            content.append((choice.get("delta") or {}).get("content") or "")
                return _deliberation("".join(content), progress, usage)
            await response.aread()
            delay = await _retry(response, attempt, waited, retries)
            attempt, waited = attempt + 1, waited + delay


def _deliberation(content: str, progress: dict[str, Any], usage: dict[str, Any]) -> _Deliberation:
    depth = usage.get("reasoning_depth") or {}
    samples = int(depth.get("samples") or progress.get("samples") or 1)
    most = int(depth.get("max_samples") or samples)
    if progress:
        # the vote's answers, as it normalised them, in the order first given; the rest had none
        votes: list[str | None] = [
            answer for answer, count in progress["votes"].items() for _ in range(count)
        ]
        votes += [None] * (samples - len(votes))
    else:  # one sample: no vote, its answer is the one
        votes = [extract_answer(content)]
    amounts = (usage.get("cost_details") or {}).get("amounts_micros") or {}
    fees = int(amounts.get("request") or 0) + int(amounts.get("depth_premium") or 0)
    return _Deliberation(content, tuple(votes), samples, most, int(usage.get("cost_micros") or 0), fees)


async def _retry(response: httpx.Response, attempt: int, waited: float, retries: ProbeRetries) -> float:
    """Wait before retrying a 429 or 503 as the probes do (`tasks.retry_delay`); anything else, or the
    retries spent, raises ValueError."""
    delay = retry_delay(response.headers, attempt)
    if (
        response.status_code not in _RETRYABLE
        or attempt >= retries.max_retries
        or waited + delay > retries.max_wait_s
        or response.headers.get("x-should-retry") == "false"
    ):
        raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
    await asyncio.sleep(delay)
    return delay
