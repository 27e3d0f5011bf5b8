"""Quality probes: verifiable tasks sent through the gateway like any client's, to measure per tier and model
what a tier's promise buys - accuracy, cost per correct answer, mean reasoning depth.

The built-in canary set is procedurally generated arithmetic word problems with known answers
(`engines.simulator.arithmetic`); a JSONL file of `{"question": ..., "answer": ...}` replaces it. Probes are
ordinary requests: rated, metered and billed like any other - to the internal tenant `tiergate-probes`, never
to a customer - and `Prober` runs them periodically within a daily spending limit and publishes the results as
Prometheus gauges. `tiergate probe` runs one on demand against any gateway.
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
from prometheus_client import CollectorRegistry, Counter, Gauge

from engines.simulator.arithmetic import generate_tasks
from gateway.deliberation.vote import extract_answer
from gateway.keys import KeyStore, KeyStoreConflict
from gateway.tiers import Tier

__all__ = [
    "PROBE_TENANT",
    "ProbeMetrics",
    "ProbeResult",
    "ProbeRetries",
    "ProbeTask",
    "Prober",
    "backoff",
    "builtin_tasks",
    "load_tasks",
    "probe_key",
    "retry_delay",
    "run_probe",
]

log = logging.getLogger("tiergate.probes")

PROBE_TENANT = "tiergate-probes"
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

    __slots__ = ("answered", "correct", "cost", "errored", "reasoning", "refused", "retries")

    def __init__(self) -> None:
        self.answered = self.refused = self.errored = self.correct = 0
        self.retries = self.cost = self.reasoning = 0


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
                # task waited (uvicorn drops idle ones after 5 s), which the request never reached
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
            waited += delay
            attempt += 1
            tally.retries += 1
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
            content, cost, reasoning = reply
            tally.answered += 1
            tally.correct += extract_answer(content) == extract_answer(task.answer)
            tally.cost += cost
            tally.reasoning += reasoning
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


def _answer(response: httpx.Response) -> tuple[str, int, int] | None:
    """(content, cost in micros, reasoning tokens) of a chat completion; None for anything else."""
    if response.status_code != 200:
        return None
    try:
        reply = response.json()
        content = reply["choices"][0]["message"].get("content") or ""
        usage = reply.get("usage") or {}
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        return str(content), int(usage.get("cost_micros") or 0), int(reasoning)
    except (ValueError, LookupError, TypeError, AttributeError):
        return None


class ProbeMetrics:
    """The probes' Prometheus gauges, in the registry the gateway's /metrics serves."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("model", "tier")
        self.accuracy = Gauge(
            "tiergate_probe_accuracy",
            "Share of the last probe run's answered tasks answered right",
            labels,
            registry=registry,
        )
        self.cost_per_correct = Gauge(
            "tiergate_probe_cost_per_correct_answer",
            "Probe spending per right answer, in the price book's currency",
            labels,
            registry=registry,
        )
        self.reasoning_tokens = Gauge(
            "tiergate_probe_mean_reasoning_tokens",
            "Mean reasoning tokens of a probe answer",
            labels,
            registry=registry,
        )
        self.runs = Counter(
            "tiergate_probe_runs", "Probe runs, per model and tier", labels, registry=registry
        )
        self.tasks = Counter(
            "tiergate_probe_tasks",
            "Probe tasks by outcome: answered, refused (429/503 after retries), errored",
            (*labels, "outcome"),
            registry=registry,
        )

    def publish(self, result: ProbeResult) -> None:
        labels = (result.model, result.tier)
        accuracy = result.accuracy
        self.accuracy.labels(*labels).set(accuracy if accuracy is not None else float("nan"))
        for outcome, count in (
            ("answered", result.answered),
            ("refused", result.refused),
            ("errored", result.errored),
        ):
            self.tasks.labels(*labels, outcome).inc(count)  # 0 too: every outcome has its series
        per_correct = result.cost_per_correct_micros
        self.cost_per_correct.labels(*labels).set(
            per_correct / 1e6 if per_correct is not None else float("nan")
        )
        self.reasoning_tokens.labels(*labels).set(result.mean_reasoning_tokens)
        self.runs.labels(*labels).inc()


class Prober:
    """Runs the probes every `interval_s` for each (model, tier), while the day's probe spending stays under
    `daily_limit_micros`; results go to the gauges and the log."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        targets: Sequence[tuple[str, str]],
        tasks: Sequence[ProbeTask],
        metrics: ProbeMetrics,
        *,
        interval_s: float,
        daily_limit_micros: int,
        effort: str | None = None,
        retries: ProbeRetries = ProbeRetries(),
    ) -> None:
        self._client = client
        self._targets = list(targets)
        self._tasks = list(tasks)
        self._metrics = metrics
        self._interval_s = interval_s
        self._limit = daily_limit_micros
        self._effort = effort
        self._retries = retries
        self._spent: tuple[str, int] = ("", 0)  # (UTC day, micros spent on probes that day)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="tiergate probes")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()

    async def run_once(self) -> list[ProbeResult]:
        results = []
        for model, tier in self._targets:
            day = datetime.now(UTC).strftime("%Y-%m-%d")
            spent = self._spent[1] if self._spent[0] == day else 0
            if spent >= self._limit:
                log.info("probes: today's limit of %d micros is spent; %s:%s waits", self._limit, model, tier)
                break
            result = await run_probe(
                self._client, model, tier, self._tasks, effort=self._effort, retries=self._retries
            )
            self._spent = (day, spent + result.cost_micros)
            self._metrics.publish(result)
            log.info("probe %s", orjson.dumps(result.to_dict()).decode())
            results.append(result)
        return results

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("a probe run failed")
            await asyncio.sleep(self._interval_s)


async def probe_key(store: KeyStore) -> str:
    """A fresh API key of the internal probe tenant (made if missing); the previous probe keys are revoked,
    so restarts do not pile them up."""
    with contextlib.suppress(KeyStoreConflict):
        await store.create_tenant(PROBE_TENANT, "tiergate quality probes (internal, never invoiced)")
    for key in await store.list_keys(PROBE_TENANT):
        if key.name == "probes" and not key.revoked:
            await store.revoke_key(key.id)
    _, secret = await store.create_key(PROBE_TENANT, name="probes", tiers=[tier.value for tier in Tier])
    return str(secret)
