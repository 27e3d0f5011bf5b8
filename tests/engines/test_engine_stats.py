"""Reading engines' /metrics into EngineStats, and the pool's scraper."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from engines import (
    EnginePool,
    EngineReply,
    EngineStats,
    PoolPolicy,
    RoutingPolicy,
    Usage,
    parse_metrics,
    parse_vllm_metrics,
)
from engines.simulator.latency import Scheduler
from engines.simulator.metrics import SimulatorMetrics

# As vLLM 0.11 exposes it (two data-parallel engines, two served names), trimmed, with its noise kept:
# HELP/TYPE lines, `_created` samples, histograms, process metrics.
VLLM_TEXT = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12345.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen3-8b"} 3.0
vllm:num_requests_running{engine="1",model_name="qwen3-8b"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen3-8b"} 7.0
vllm:num_requests_waiting{engine="1",model_name="qwen3-8b"} 1.0
# HELP vllm:kv_cache_usage_perc KV-Cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="qwen3-8b"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="qwen3-8b"} 0.625
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="qwen3-8b"} 10000.0
vllm:prefix_cache_queries_total{engine="1",model_name="qwen3-8b"} 5000.0
vllm:prefix_cache_queries_created{engine="0",model_name="qwen3-8b"} 1.7645e+09
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="qwen3-8b"} 6000.0
vllm:prefix_cache_hits_total{engine="1",model_name="qwen3-8b"} 1500.0
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="qwen3-8b"} 400.0
vllm:spec_decode_num_drafts_total{engine="1",model_name="qwen3-8b"} 100.0
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="qwen3-8b"} 1600.0
vllm:spec_decode_num_draft_tokens_total{engine="1",model_name="qwen3-8b"} 400.0
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="qwen3-8b"} 1100.0
vllm:spec_decode_num_accepted_tokens_total{engine="1",model_name="qwen3-8b"} 300.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="qwen3-8b"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="qwen3-8b"} 42.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="qwen3-8b"} 42.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="qwen3-8b"} 3.5
"""


def test_vllm_metrics_sum_over_label_sets() -> None:
    stats = parse_vllm_metrics(VLLM_TEXT, 12.5)
    assert stats == EngineStats(
        running=5.0,
        waiting=8.0,
        kv_usage=0.625,  # one cache per engine, reported whole under every label: the fullest
        spec_drafts=500.0,
        spec_draft_tokens=2000.0,
        spec_accepted_tokens=1400.0,
        prefix_queries=15000.0,
        prefix_hits=7500.0,
        scraped_at=12.5,
    )
    assert parse_metrics(VLLM_TEXT, 12.5, "vllm") == stats


def test_missing_metrics_are_none() -> None:
    text = """\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2
vllm:kv_cache_usage_perc{engine="0",model_name="m"} NaN
vllm:num_requests_running{engine="0",model_name="m"}
vllm:prefix_cache_hits_total{engine="0",model_name="m"} not-a-number
"""
    assert parse_vllm_metrics(text, 1.0) == EngineStats(waiting=2.0, scraped_at=1.0)
    assert parse_vllm_metrics("", 3.0) == EngineStats(scraped_at=3.0)
    assert parse_vllm_metrics("<html>not metrics</html>", 3.0) == EngineStats(scraped_at=3.0)


def test_unlabelled_samples_timestamps_and_older_names() -> None:
    text = (
        "vllm:num_requests_running 4 1700000000000\n"
        "vllm:gpu_cache_usage_perc 0.5\n"  # vLLM V0's name for it
        "vllm:gpu_prefix_cache_queries_total 10\n"
        'vllm:num_requests_waiting{model_name="a}b",engine="0"} 3\n'  # a brace inside a label value
    )
    stats = parse_vllm_metrics(text, 0.0)
    assert (stats.running, stats.kv_usage, stats.prefix_queries, stats.waiting) == (4.0, 0.5, 10.0, 3.0)


def test_reads_what_the_simulator_serves() -> None:
    scheduler = Scheduler(("a", "b"), 8, 1000)
    metrics = SimulatorMetrics(("a", "b"), scheduler)
    scheduler.running["a"], scheduler.waiting["b"], scheduler.kv_tokens = 2, 5, 250
    metrics.models["a"].prefix_queries, metrics.models["b"].prefix_hits = 100, 40
    stats = parse_vllm_metrics(metrics.exposition().decode(), 0.0)
    assert (stats.running, stats.waiting, stats.kv_usage) == (2.0, 5.0, 0.25)
    assert (stats.prefix_queries, stats.prefix_hits, stats.spec_drafts) == (100.0, 40.0, 0.0)


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="no metrics parser"):
        parse_metrics("", 0.0, "nonesuch")
    with pytest.raises(ValueError, match="no metrics parser"):
        EnginePool("p", [MetricsEngine("a")], PoolPolicy(metrics_family="nonesuch"))


# ------------------------------------------------------------------------------------------ the scraper


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class MetricsEngine:
    """A replica whose /metrics text the test sets; None: the scrape fails; `hang`: it never answers."""

    def __init__(self, url: str, text: str | None = None) -> None:
        self.url = url
        self.text = text
        self.hang = False
        self.scrapes = 0

    async def complete(
        self, path: str, payload: bytes, *, request_id: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> EngineReply:
        return EngineReply({}, Usage(1, 1), self.url)

    async def stream(
        self, path: str, payload: bytes, *, request_id: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> Any:
        raise NotImplementedError

    async def health(self) -> bool:
        return True

    async def metrics_text(self) -> str | None:
        self.scrapes += 1
        if self.hang:
            await asyncio.sleep(3600)
        return self.text

    async def count_tokens(
        self,
        model: str,
        *,
        prompt: str | None = None,
        messages: Any = None,
        template: Mapping[str, Any] | None = None,
    ) -> int | None:
        return None


def waiting(n: int) -> str:
    return f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {n}\n'


async def test_scrape_updates_stats_and_failures_leave_them_stale() -> None:
    clock = Clock()
    a, b = MetricsEngine("a", waiting(6)), MetricsEngine("b", waiting(0))
    pool = EnginePool(
        "p", [a, b], PoolPolicy(scrape_timeout_s=0.05, routing=RoutingPolicy(stale_after_s=5.0)), clock=clock
    )
    await pool.scrape_stats()
    first = pool.replicas[0].stats
    assert first is not None and first.waiting == 6.0 and first.scraped_at == 100.0
    assert pool.fresh_stats(pool.replicas[0], 104.0) is first
    # a busy replica is avoided while its stats are fresh
    replies = [await pool.complete("/x", b"{}", request_id=str(i)) for i in range(4)]
    assert {reply.replica for reply in replies} == {"b"}
    assert pool.routing_score(pool.replicas[0], 101.0) == 6.0
    # a failed scrape (None) and a hung one (timeout) keep the last stats; they go stale with time
    a.text = None
    b.hang = True
    clock.now = 103.0
    await pool.scrape_stats()
    assert pool.replicas[0].stats is first and pool.replicas[1].stats is not None
    clock.now = 105.5
    assert pool.fresh_stats(pool.replicas[0], clock.now) is None
    assert pool.routing_score(pool.replicas[0], clock.now) == 0.0
    replies = [await pool.complete("/x", b"{}", request_id=str(i)) for i in range(4)]
    assert {reply.replica for reply in replies} == {"a", "b"}  # stale: back to least-outstanding


async def test_scrape_loop_runs_with_the_pool_and_stops_with_it() -> None:
    a = MetricsEngine("a", waiting(1))
    pool = EnginePool("p", [a], PoolPolicy(scrape_interval_s=0.01, health_interval_s=3600))
    pool.start()
    for _ in range(200):
        if a.scrapes >= 3:
            break
        await asyncio.sleep(0.01)
    await pool.aclose()
    assert a.scrapes >= 3 and pool.replicas[0].stats is not None
    seen = a.scrapes
    await asyncio.sleep(0.05)
    assert a.scrapes == seen


async def test_scraping_can_be_turned_off() -> None:
    a = MetricsEngine("a", waiting(1))
    pool = EnginePool("p", [a], PoolPolicy(scrape_interval_s=0, health_interval_s=3600))
    pool.start()
    await asyncio.sleep(0.02)
    await pool.aclose()
    assert a.scrapes == 0


async def test_spec_decode_acceptance_over_the_pool() -> None:
    def spec(drafted: int, accepted: int) -> str:
        return (
            f'vllm:spec_decode_num_draft_tokens_total{{engine="0",model_name="m"}} {drafted}\n'
            f'vllm:spec_decode_num_accepted_tokens_total{{engine="0",model_name="m"}} {accepted}\n'
        )

    a, b = MetricsEngine("a", spec(100, 80)), MetricsEngine("b", spec(300, 120))
    pool = EnginePool("p", [a, b])
    assert pool.spec_decode_acceptance() is None  # nothing scraped yet
    await pool.scrape_stats()
    assert pool.spec_decode_acceptance() == pytest.approx(0.5)
    none = EnginePool("q", [MetricsEngine("c", spec(0, 0))])
    await none.scrape_stats()
    assert none.spec_decode_acceptance() is None  # no drafts: no ratio
