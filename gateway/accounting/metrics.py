"""The gateway's Prometheus metrics (the list, with meanings: docs/metrics.md).

Per-request metrics are updated once, as a request's record is settled (`RequestMetrics.observe`), through
label children cached per (tier, model): a request costs a few dictionary lookups and histogram observations,
not a label resolution per metric. What can be read when scraped - pools, replicas, the ledger's backlog - is
read then, by a collector: nothing on the request path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from engines import EnginePool
from engines.routing import routable
from gateway.accounting.bookkeeper import Bookkeeper
from gateway.accounting.exchange import Exchange
from gateway.settings import metrics_multiprocess_dir
from pricing import Charge, UsageRecord

__all__ = ["GatewayCollector", "RequestMetrics", "scrape_registry"]

_TTFT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
_DURATION = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
_REASONING = (0, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class _Series:
    """The label children of one (tier, model)."""

    __slots__ = (
        "cached",
        "completion",
        "duration",
        "extensions",
        "floor_met",
        "floor_missed",
        "itl",
        "overhead",
        "prompt",
        "reasoning",
        "reasoning_hist",
        "samples",
        "ttft",
    )

    def __init__(self, m: RequestMetrics, tier: str, model: str) -> None:
        self.prompt = m.tokens.labels(tier, model, "prompt")
        self.cached = m.tokens.labels(tier, model, "cached")
        self.completion = m.tokens.labels(tier, model, "completion")
        self.reasoning = m.tokens.labels(tier, model, "reasoning")
        self.reasoning_hist = m.reasoning_tokens.labels(tier, model)
        self.ttft = m.ttft.labels(tier)
        self.itl = m.itl.labels(tier)
        self.duration = m.duration.labels(tier)
        self.overhead = m.overhead.labels(tier)
        self.extensions = m.extensions.labels(model)
        self.samples = m.samples.labels(model)
        self.floor_met = m.floor.labels(model, "true")
        self.floor_missed = m.floor.labels(model, "false")


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry, *, tenant_labels: bool = False) -> None:
        self._tenant_labels = tenant_labels
        who = ("tenant",) if tenant_labels else ()
        self.requests = Counter(
            "tiergate_requests",
            "Inference requests that reached an engine pool",
            ("tier", "model", "endpoint", "status", "outcome", *who),
            registry=registry,
        )
        self.tokens = Counter(
            "tiergate_tokens", "Tokens by kind", ("tier", "model", "kind"), registry=registry
        )
        self.cost = Counter(
            "tiergate_cost_micros",
            "What requests were charged, in micro-units of the currency",
            ("tier", "model", "currency", *who),
            registry=registry,
        )
        self.refusals = Counter(
            "tiergate_refusals",
            "Requests refused before any engine (rate_limit, budget)",
            ("reason", "tier"),
            registry=registry,
        )
        self.ttft = Histogram(
            "tiergate_time_to_first_token_seconds",
            "Time to the first streamed event",
            ("tier",),
            buckets=_TTFT,
            registry=registry,
        )
        self.itl = Histogram(
            "tiergate_inter_token_latency_seconds",
            "A streamed request's mean gap between generated tokens",
            ("tier",),
            buckets=_ITL,
            registry=registry,
        )
        self.duration = Histogram(
            "tiergate_request_duration_seconds",
            "End-to-end request time",
            ("tier",),
            buckets=_DURATION,
            registry=registry,
        )
        self.overhead = Histogram(
            "tiergate_gateway_overhead_seconds",
            "From a request's arrival to its engine call",
            ("tier",),
            buckets=_OVERHEAD,
            registry=registry,
        )
        self.reasoning_tokens = Histogram(
            "tiergate_reasoning_tokens",
            "Reasoning tokens per request",
            ("tier", "model"),
            buckets=_REASONING,
            registry=registry,
        )
        self.extensions = Counter(
            "tiergate_deliberation_extensions", "Budget-forcing continuations", ("model",), registry=registry
        )
        self.samples = Counter(
            "tiergate_deliberation_samples", "Self-consistency samples", ("model",), registry=registry
        )
        self.floor = Counter(
            "tiergate_deliberation_floor",
            "Deliberations by whether the depth floor was delivered",
            ("model", "met"),
            registry=registry,
        )
        self.shortfall = Counter(
            "tiergate_depth_shortfall",
            "Deliberations that delivered less depth than they asked of the engines, by the audit's reason",
            ("pool", "model", "reason"),
            registry=registry,
        )
        self.cascades = Counter(
            "tiergate_cascade_requests",
            "Cascade requests by whether the deliberate tier answered",
            ("model", "escalated"),
            registry=registry,
        )
        self.engine_aborts = Counter(
            "tiergate_engine_aborts",
            "Engine requests the gateway stopped before the engine finished them (the engine aborts them)",
            ("pool", "replica"),
            registry=registry,
        )
        self._series: dict[tuple[str, str], _Series] = {}
        # label children by their label values: a dict lookup per request, not a label resolution
        self._counted: dict[tuple[Any, ...], Any] = {}
        self._spent: dict[tuple[str, ...], Any] = {}

    def refused(self, reason: str, tier: str) -> None:
        self.refusals.labels(reason, tier).inc()

    def watch_replicas(self, pool: str, replicas: Iterable[str]) -> None:
        """Each replica's abort count at 0 from the start (a counter that has not counted still exists)."""
        for replica in replicas:
            self.engine_aborts.labels(pool, replica)

    def engine_aborted(self, pool: str, replica: str) -> None:
        """An engine request stopped before its end: its client left, the gateway's depth cap stopped it,
        or a shutdown. vLLM 0.32 counts no abort (`finished_reason="abort"` stays 0): this does."""
        self.engine_aborts.labels(pool, replica).inc()

    def observe(
        self, exchange: Exchange, record: UsageRecord, charge: Charge | None, overhead_s: float | None
    ) -> None:
        """One settled request."""
        tier, model = record.tier, record.model
        series = self._series.get((tier, model))
        if series is None:
            series = self._series[tier, model] = _Series(self, tier, model)
        who = (record.tenant or "",) if self._tenant_labels else ()
        labels = (tier, model, record.endpoint, exchange.status, record.outcome, *who)
        counted = self._counted.get(labels)
        if counted is None:
            counted = self._counted[labels] = self.requests.labels(*labels[:3], str(labels[3]), *labels[4:])
        counted.inc()
        if record.prompt_tokens:
            series.prompt.inc(record.prompt_tokens)
        if record.cached_tokens:
            series.cached.inc(record.cached_tokens)
        if record.completion_tokens:
            series.completion.inc(record.completion_tokens)
        if record.reasoning_tokens:
            series.reasoning.inc(record.reasoning_tokens)
        if charge is not None and charge.total:
            key = (tier, model, charge.currency, *who)
            spent = self._spent.get(key)
            if spent is None:
                spent = self._spent[key] = self.cost.labels(*key)
            spent.inc(charge.total)
        series.duration.observe(exchange.duration_s)
        if overhead_s is not None:
            series.overhead.observe(overhead_s)
        first = exchange.first_token_s
        if first is not None and exchange.streamed:
            series.ttft.observe(first)
            tokens = exchange.delivered_tokens or record.completion_tokens
            if tokens > 1:
                series.itl.observe(max(0.0, exchange.duration_s - first) / (tokens - 1))
        depth = record.depth
        if record.completion_tokens:
            series.reasoning_hist.observe(record.reasoning_tokens)
        if depth.floor is not None:
            (series.floor_met if depth.floor_met else series.floor_missed).inc()
            series.samples.inc(depth.samples)
            if depth.extensions:
                series.extensions.inc(depth.extensions)
        for reason in depth.shortfall:  # rare: resolved when it happens
            self.shortfall.labels(exchange.pool, model, reason).inc()
        if record.cascade is not None:  # decided (a fast stage cut before its answer is not counted)
            self.cascades.labels(record.model, "true" if record.cascade.escalated else "false").inc()


class GatewayCollector(Collector):
    """Pools, replicas and the ledger's backlog, read when Prometheus scrapes."""

    def __init__(self, pools: Mapping[str, EnginePool], bookkeeper: Bookkeeper | None) -> None:
        self._pools = pools
        self._bookkeeper = bookkeeper

    def collect(self) -> Iterator[Any]:
        in_flight = GaugeMetricFamily(
            "tiergate_pool_requests_in_flight", "Requests outstanding on the pool", labels=["pool"]
        )
        up = GaugeMetricFamily(
            "tiergate_replica_up", "Passed its last health check and not ejected", labels=["pool", "replica"]
        )
        replica_in_flight = GaugeMetricFamily(
            "tiergate_replica_requests_in_flight",
            "Requests outstanding on the replica",
            labels=["pool", "replica"],
        )
        routing_score = GaugeMetricFamily(
            "tiergate_replica_routing_score",
            "The load routing sees on the replica: in flight, plus the engine's queue and KV usage weighted",
            labels=["pool", "replica"],
        )
        engine_waiting = GaugeMetricFamily(
            "tiergate_replica_engine_requests_waiting",
            "Requests waiting in the engine's queue, as last scraped (fresh scrapes only)",
            labels=["pool", "replica"],
        )
        engine_kv = GaugeMetricFamily(
            "tiergate_replica_engine_kv_cache_usage",
            "The engine's KV-cache usage (1 = full), as last scraped (fresh scrapes only)",
            labels=["pool", "replica"],
        )
        acceptance = GaugeMetricFamily(
            "tiergate_pool_spec_decode_acceptance_ratio",
            "Speculative decoding: accepted / draft tokens of the pool's replicas since the engines started",
            labels=["pool"],
        )
        for name, pool in self._pools.items():
            in_flight.add_metric([name], sum(replica.outstanding for replica in pool.replicas))
            now = pool.now()
            for replica in pool.replicas:
                up.add_metric([name, replica.url], 1.0 if routable(replica.state(), now) else 0.0)
                replica_in_flight.add_metric([name, replica.url], replica.outstanding)
                routing_score.add_metric([name, replica.url], pool.routing_score(replica, now))
                stats = pool.fresh_stats(replica, now)
                if stats is not None and stats.waiting is not None:
                    engine_waiting.add_metric([name, replica.url], stats.waiting)
                if stats is not None and stats.kv_usage is not None:
                    engine_kv.add_metric([name, replica.url], stats.kv_usage)
            ratio = pool.spec_decode_acceptance()
            if ratio is not None:
                acceptance.add_metric([name], ratio)
        yield in_flight
        yield up
        yield replica_in_flight
        yield routing_score
        yield engine_waiting
        yield engine_kv
        yield acceptance
        if self._bookkeeper is None:
            return
        journal, writer = self._bookkeeper.journal_stats, self._bookkeeper.writer_stats
        rows = CounterMetricFamily("tiergate_ledger_rows", "Ledger rows written by this process's writer")
        rows.add_metric([], writer.added)
        yield rows
        backlog = GaugeMetricFamily(
            "tiergate_journal_backlog_rows", "Rows journaled by this process and not yet in the ledger"
        )
        backlog.add_metric([], max(0, journal.appends - writer.own))
        yield backlog
        commits = CounterMetricFamily(
            "tiergate_journal_commits",
            "Journal writes with their sync: on the journal's thread (a group commit) or, for a lone"
            " request's row, on the event loop",
            labels=["thread"],
        )
        commits.add_metric(["journal"], journal.batches - journal.on_loop)
        commits.add_metric(["loop"], journal.on_loop)
        yield commits
        writes = SummaryMetricFamily(
            "tiergate_ledger_write_seconds", "Time of each batch written to the ledger"
        )
        writes.add_metric([], count_value=writer.writes, sum_value=writer.write_seconds)
        yield writes
        failures = CounterMetricFamily("tiergate_ledger_write_failures", "Failed batch writes to the ledger")
        failures.add_metric([], writer.failures)
        yield failures


def scrape_registry(
    own: CollectorRegistry, collector: GatewayCollector, *more: Collector
) -> CollectorRegistry:
    """What GET /metrics serves: this process's registry, or with several workers (multiprocess mode) every
    worker's request metrics aggregated, plus this worker's pools and ledger (and `more` of this worker's:
    collectors registered in `own` too)."""
    if metrics_multiprocess_dir() is None:
        return own
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(collector)
    for extra in more:
        registry.register(extra)
    return registry
