"""The gateway's own quality probes: `Prober` runs `gateway.probes.tasks.run_probe` for each model and tier
every interval, within a daily spending limit, billed to the internal tenant `tiergate-probes` (never a
customer), and publishes each run as Prometheus metrics (`ProbeMetrics`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.keys import KeyStore, KeyStoreConflict
from gateway.probes.tasks import ProbeResult, ProbeRetries, ProbeTask, run_probe
from gateway.tiers import Tier

__all__ = ["PROBE_TENANT", "ProbeMetrics", "Prober", "probe_key"]

log = logging.getLogger("tiergate.probes")

PROBE_TENANT = "tiergate-probes"


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
        retries: ProbeRetries,
        effort: str | None = None,
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
