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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
    "ProbeTask",
    "Prober",
    "builtin_tasks",
    "load_tasks",
    "probe_key",
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
class ProbeResult:
    model: str
    tier: str
    effort: str | None
    tasks: int
    answered: int  # requests that got an answer (not an error)
    correct: int
    cost_micros: int
    reasoning_tokens: int
    seconds: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.tasks if self.tasks else 0.0

    @property
    def cost_per_correct_micros(self) -> int | None:
        return -(-self.cost_micros // self.correct) if self.correct else None

    @property
    def mean_reasoning_tokens(self) -> float:
        return self.reasoning_tokens / self.answered if self.answered else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "tier": self.tier,
            "effort": self.effort,
            "tasks": self.tasks,
            "answered": self.answered,
            "correct": self.correct,
            "accuracy": round(self.accuracy, 4),
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


async def run_probe(
    client: httpx.AsyncClient,
    model: str,
    tier: str,
    tasks: Sequence[ProbeTask],
    *,
    effort: str | None = None,
    concurrency: int = 4,
    max_tokens: int | None = None,
) -> ProbeResult:
    """Send every task to `model:tier` through the gateway at `client`'s base URL, `concurrency` at a time,
    and score the answers. Failed requests count as wrong."""
    started = time.monotonic()
    gate = asyncio.Semaphore(concurrency)
    outcomes: list[tuple[bool, bool, int, int]] = []  # (answered, correct, cost, reasoning tokens)

    async def one(task: ProbeTask) -> None:
        body: dict[str, Any] = {
            "model": f"{model}:{tier}",
            "messages": [{"role": "user", "content": task.question + _INSTRUCTION}],
        }
        if effort is not None:
            body["reasoning_effort"] = effort
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        async with gate:
            try:
                response = await client.post("/v1/chat/completions", content=orjson.dumps(body))
            except httpx.HTTPError as exc:
                log.warning("probe request to %s:%s failed: %r", model, tier, exc)
                outcomes.append((False, False, 0, 0))
                return
        if response.status_code != 200:
            log.warning("probe request to %s:%s: HTTP %d", model, tier, response.status_code)
            outcomes.append((False, False, 0, 0))
            return
        reply = response.json()
        content = reply["choices"][0]["message"].get("content") or ""
        usage = reply.get("usage") or {}
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        correct = extract_answer(content) == extract_answer(task.answer)
        outcomes.append((True, correct, int(usage.get("cost_micros") or 0), int(reasoning)))

    await asyncio.gather(*(one(task) for task in tasks))
    return ProbeResult(
        model=model,
        tier=tier,
        effort=effort,
        tasks=len(tasks),
        answered=sum(answered for answered, _, _, _ in outcomes),
        correct=sum(correct for _, correct, _, _ in outcomes),
        cost_micros=sum(cost for _, _, cost, _ in outcomes),
        reasoning_tokens=sum(tokens for _, _, _, tokens in outcomes),
        seconds=time.monotonic() - started,
    )


class ProbeMetrics:
    """The probes' Prometheus gauges, in the registry the gateway's /metrics serves."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("model", "tier")
        self.accuracy = Gauge(
            "tiergate_probe_accuracy", "Share of probe tasks answered right", labels, registry=registry
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

    def publish(self, result: ProbeResult) -> None:
        labels = (result.model, result.tier)
        self.accuracy.labels(*labels).set(result.accuracy)
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
    ) -> None:
        self._client = client
        self._targets = list(targets)
        self._tasks = list(tasks)
        self._metrics = metrics
        self._interval_s = interval_s
        self._limit = daily_limit_micros
        self._effort = effort
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
            result = await run_probe(self._client, model, tier, self._tasks, effort=self._effort)
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
