"""Quality probes: verifiable tasks sent through the gateway like any client's, to measure per tier and model
what a tier's promise buys - accuracy, cost per correct answer, mean reasoning depth.

The built-in canary set is procedurally generated arithmetic word problems with known answers
(`engines.simulator.arithmetic`); a JSONL file of `{"question": ..., "answer": ...}` replaces it. Probes are
ordinary requests: rated, metered and billed like any other - to the internal tenant `tiergate-probes`, never
to a customer - and `gateway.probes.prober.Prober` runs them periodically within a daily spending limit and
publishes the results as Prometheus metrics. `tiergate probe` runs one on demand against any gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from engines.simulator.arithmetic import generate_tasks
from gateway.deliberation.vote import extract_answer

__all__ = [
    "ProbeResult",
    "ProbeRetries",
    "ProbeTask",
    "backoff",
    "builtin_tasks",
    "load_tasks",
    "retry_delay",
    "run_probe",
]

log = logging.getLogger("tiergate.probes")

_INSTRUCTION = "\nSolve it, and end your reply with 'The answer is N.'"


@dataclass(frozen=True, slots=True)
class ProbeTask:
    question: str
    answer: str  # compared after the same normalisation as the model's (gateway.deliberation.vote)


@dataclass(frozen=True, slots=True)
class ProbeRetries:
    """How long a probe task keeps trying after a 429 or 503 or a failed connection: at most `max_retries`
    retries, and at most `max_wait_s` seconds of waiting in all. Each wait is the one the answer asks for
    (`retry-after-ms`, else `retry-after`), else a backoff from 0.5 s doubling up to 8 s; a wait beyond what
    is left of the bound, or an answer with `x-should-retry: false` (a spent budget), ends the task at once:
    refused after a 429 or 503, errored after a failed connection."""

    max_retries: int = 5
    max_wait_s: float = 120.0


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """A probe run of `model:tier`, or its progress so far. Every task ends as one of answered (the
    gateway answered 200), refused (429 or 503, after the retries allowed) or errored (any other failure).
    Accuracy and cost per right answer are over the answered tasks: a refusal is not a wrong answer."""

    model: str
    tier: str
    effort: str | None
    tasks: int
    answered: int
    refused: int
    errored: int
    correct: int
    retries: int  # retries sent after a 429 or 503, all tasks together
    cost_micros: int
    reasoning_tokens: int
    seconds: float
    samples: int = 0  # samples drawn for the answered tasks (`usage.reasoning_depth.samples`; 1 without)
    floors_met: int = 0  # answered tasks whose depth floor was met (billed deliberate, with the premium)

    @property
    def done(self) -> int:
        return self.answered + self.refused + self.errored

    @property
    def accuracy(self) -> float | None:
        """Share of the answered tasks answered right; None when none was answered."""
        return self.correct / self.answered if self.answered else None

    @property
    def cost_per_correct_micros(self) -> int | None:
        return -(-self.cost_micros // self.correct) if self.correct else None

    @property
    def mean_reasoning_tokens(self) -> float:
        return self.reasoning_tokens / self.answered if self.answered else 0.0

    @property
    def mean_samples(self) -> float:
        return self.samples / self.answered if self.answered else 0.0

    def to_dict(self) -> dict[str, Any]:
        accuracy = self.accuracy
        return {
            "model": self.model,
            "tier": self.tier,
            "effort": self.effort,
            "tasks": self.tasks,
            "answered": self.answered,
            "refused": self.refused,
            "errored": self.errored,
            "correct": self.correct,
            "accuracy": round(accuracy, 4) if accuracy is not None else None,
            "retries": self.retries,
            "cost_micros": self.cost_micros,
            "cost_per_correct_micros": self.cost_per_correct_micros,
            "mean_reasoning_tokens": round(self.mean_reasoning_tokens, 1),
            "mean_samples": round(self.mean_samples, 3),
            "floors_met": self.floors_met,
            "seconds": round(self.seconds, 3),
        }


def builtin_tasks(count: int, seed: int = 0, difficulty: int = 3) -> list[ProbeTask]:
    return [ProbeTask(t.question, str(t.answer)) for t in generate_tasks(count, seed, difficulty)]


def load_tasks(path: Path) -> list[ProbeTask]:
    """A user's own probe set: one JSON object a line, `{"question": "...", "answer": "..."}`."""
    tasks = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            tasks.append(ProbeTask(str(item["question"]), str(item["answer"])))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}:{number}: not a {{'question', 'answer'}} object") from None
    if not tasks:
        raise ValueError(f"{path}: no tasks")
    return tasks


class _Tally:
    """The counts of one run as its tasks end."""

    __slots__ = (
        "answered",
        "correct",
        "cost",
        "errored",
        "floors",
        "reasoning",
        "refused",
        "retries",
        "samples",
    )

    def __init__(self) -> None:
        self.answered = self.refused = self.errored = self.correct = 0
        self.retries = self.cost = self.reasoning = self.samples = self.floors = 0


async def run_probe(
    client: httpx.AsyncClient,
    model: str,
    tier: str,
    tasks: Sequence[ProbeTask],
    *,
    effort: str | None = None,
    concurrency: int = 4,
    max_tokens: int | None = None,
    retries: ProbeRetries = ProbeRetries(),
    on_progress: Callable[[ProbeResult], None] | None = None,
) -> ProbeResult:
    """Send every task to `model:tier` through the gateway at `client`'s base URL, `concurrency` at a time,
    and score the answers. A 429 or 503 is retried as `retries` allows (the task keeps its place in the
    concurrency while it waits: a limited key is not sent more at once); `on_progress` gets the counts so
    far after each task ends and each retry."""
    started = time.monotonic()
    gate = asyncio.Semaphore(concurrency)
    tally = _Tally()

    def snapshot() -> ProbeResult:
        return ProbeResult(
            model=model,
            tier=tier,
            effort=effort,
            tasks=len(tasks),
            answered=tally.answered,
            refused=tally.refused,
            errored=tally.errored,
            correct=tally.correct,
            retries=tally.retries,
            cost_micros=tally.cost,
            reasoning_tokens=tally.reasoning,
            seconds=time.monotonic() - started,
            samples=tally.samples,
            floors_met=tally.floors,
        )

    def progressed() -> None:
        if on_progress is not None:
            on_progress(snapshot())

    async def send(body: bytes) -> httpx.Response | None:
        """The final answer to one task's request (after the retries allowed), or None when refused; a
        connection that still fails when the retries are spent raises."""
        waited, attempt = 0.0, 0
        while True:
            try:
                response = await client.post("/v1/chat/completions", content=body)
            except httpx.TransportError:
                # retried as openai-python does: mostly a pooled connection the server closed while the
                # task waited (uvicorn drops idle ones after 5 s), which the request never reached; not a
                # retry after a refusal, so not counted as one
                delay = backoff(attempt)
                if attempt >= retries.max_retries or waited + delay > retries.max_wait_s:
                    raise
            else:
                if response.status_code not in _RETRYABLE:
                    return response
                delay = retry_delay(response.headers, attempt)
                if (
                    attempt >= retries.max_retries
                    or waited + delay > retries.max_wait_s
                    or response.headers.get("x-should-retry") == "false"
                ):
                    log.info("probe request to %s:%s refused: HTTP %d", model, tier, response.status_code)
                    return None
                tally.retries += 1
            waited += delay
            attempt += 1
            progressed()
            await asyncio.sleep(delay)

    async def one(task: ProbeTask) -> None:
        request: dict[str, Any] = {
            "model": f"{model}:{tier}",
            "messages": [{"role": "user", "content": task.question + _INSTRUCTION}],
        }
        if effort is not None:
            request["reasoning_effort"] = effort
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        async with gate:
            response: httpx.Response | httpx.HTTPError | None
            try:
                response = await send(orjson.dumps(request))
            except httpx.HTTPError as exc:
                response = exc
        if response is None:
            tally.refused += 1
        elif isinstance(response, httpx.HTTPError) or (reply := _answer(response)) is None:
            log.warning("probe request to %s:%s failed: %s", model, tier, _failure(response))
            tally.errored += 1
        else:
            content, cost, reasoning, samples, floor_met = reply
            tally.answered += 1
            tally.correct += extract_answer(content) == extract_answer(task.answer)
            tally.cost += cost
            tally.reasoning += reasoning
            tally.samples += samples
            tally.floors += floor_met
        progressed()

    await asyncio.gather(*(one(task) for task in tasks))
    return snapshot()


_RETRYABLE = frozenset({429, 503})
_BACKOFF_S = (0.5, 8.0)  # the first wait and the longest, when an answer names none


def retry_delay(headers: httpx.Headers, attempt: int) -> float:
    """Seconds to wait before retry `attempt + 1`: `retry-after-ms`, else `retry-after` (seconds or an
    HTTP date), as openai-python reads them; else an exponential backoff."""
    with contextlib.suppress(ValueError):
        milliseconds = float(headers.get("retry-after-ms", ""))
        if math.isfinite(milliseconds) and milliseconds >= 0:
            return milliseconds / 1000
    after = headers.get("retry-after", "")
    with contextlib.suppress(ValueError):
        seconds = float(after)
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, (parsedate_to_datetime(after) - datetime.now(UTC)).total_seconds())
    return backoff(attempt)


def backoff(attempt: int) -> float:
    """The wait before retry `attempt + 1` when nothing says how long: 0.5 s, doubling, at most 8 s."""
    first, longest = _BACKOFF_S
    return float(min(first * 2**attempt, longest))


def _failure(response: httpx.Response | httpx.HTTPError) -> str:
    if isinstance(response, httpx.HTTPError):
        return repr(response)
    return f"HTTP {response.status_code} {response.text[:200]}"


def _answer(response: httpx.Response) -> tuple[str, int, int, int, bool] | None:
    """(content, cost in micros, reasoning tokens, samples drawn, depth floor met) of a chat completion;
    None for anything else."""
    if response.status_code != 200:
        return None
    try:
        reply = response.json()
        content = reply["choices"][0]["message"].get("content") or ""
        usage = reply.get("usage") or {}
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        depth = usage.get("reasoning_depth") or {}
        samples, floor_met = int(depth.get("samples") or 1), depth.get("floor_met") is True
        return str(content), int(usage.get("cost_micros") or 0), int(reasoning), samples, floor_met
    except (ValueError, LookupError, TypeError, AttributeError):
        return None
