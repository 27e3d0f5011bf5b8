"""Load-aware routing and prefix affinity against real simulated engines over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import orjson

from engines import EngineHTTP, EnginePool, OpenAICompatEngine, PoolPolicy, Timeouts
from engines.affinity import affinity_key
from engines.simulator import SimulatorConfig, create_simulator_app, profile
from engines.simulator.app import SimulatorApp
from tests.engines.simulator.sim_support import serving

MODEL = "qwen3-8b"
QUICK = profile("fast", ttft_base_s=0.001, itl_s=0.001, prefill_s_per_token=0.0, output_tokens_range=(4, 8))


@asynccontextmanager
async def pool_of(
    configs: Sequence[SimulatorConfig], policy: PoolPolicy
) -> AsyncIterator[tuple[EnginePool, list[SimulatorApp], list[str]]]:
    apps = [create_simulator_app(config) for config in configs]
    async with AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serving(app)) for app in apps]
        http = EngineHTTP.create()
        stack.push_async_callback(http.aclose)
        pool = EnginePool("fast", [OpenAICompatEngine(url, http, Timeouts()) for url in urls], policy)
        stack.push_async_callback(pool.aclose)
        yield pool, apps, urls


def chat(system: str, user: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "max_tokens": 4,
    }


async def test_requests_steer_away_from_a_busy_replica_once_scraped() -> None:
    busy_config = profile("fast", max_num_seqs=1, ttft_base_s=0.001, itl_s=0.001)
    policy = PoolPolicy(scrape_interval_s=0.05, health_interval_s=3600)
    async with AsyncExitStack() as stack:
        pool, apps, urls = await stack.enter_async_context(pool_of([busy_config, QUICK], policy))
        # fill the busy replica from outside the gateway: one request holds its only slot, five queue
        outside = await stack.enter_async_context(httpx.AsyncClient(base_url=urls[0], timeout=30))
        body, stall = chat("sys", "hold the slot"), {"x-sim-fault": "stall=20"}
        stalled = [
            asyncio.create_task(outside.post("/v1/chat/completions", json=body, headers=stall))
            for _ in range(6)
        ]
        try:
            for _ in range(500):
                if apps[0].engine.scheduler.waiting[MODEL] == 5:
                    break
                await asyncio.sleep(0.01)
            pool.start()
            for _ in range(200):
                stats = pool.replicas[0].stats
                if stats is not None and stats.waiting == 5:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the busy replica was never scraped")
            replies = [
                await pool.complete(
                    "/v1/chat/completions", orjson.dumps(chat("s", f"q{i}")), request_id=f"r{i}"
                )
                for i in range(8)
            ]
            assert {reply.replica for reply in replies} == {urls[1]}
            assert pool.routing_score(pool.replicas[0], time.monotonic()) >= 5
        finally:
            for task in stalled:
                task.cancel()
            for task in stalled:
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await task


async def test_the_same_system_prompt_lands_on_one_replica_and_hits_its_prefix_cache() -> None:
    systems = [f"You are assistant number {n}. " + f"Rule {n}: be exact and kind. " * 60 for n in range(4)]
    policy = PoolPolicy(scrape_interval_s=0, health_interval_s=3600)
    async with pool_of([QUICK, QUICK, QUICK], policy) as (pool, _, _):
        served: dict[int, set[str]] = {n: set() for n in range(len(systems))}
        for turn in range(4):
            for n, system in enumerate(systems):
                body = chat(system, f"question {turn} about topic {n}")
                key = affinity_key(body, chat=True)
                assert key is not None and key.startswith("p:")
                reply = await pool.complete(
                    "/v1/chat/completions", orjson.dumps(body), request_id=f"{n}-{turn}", affinity=key
                )
                served[n].add(reply.replica)
                details = (reply.usage.cached_tokens if reply.usage else 0) or 0
                assert turn == 0 or details > 0  # every repeat found its prefix cached
        assert all(len(replicas) == 1 for replicas in served.values()), served
        await pool.scrape_stats()
        queries = sum(replica.stats.prefix_queries or 0 for replica in pool.replicas if replica.stats)
        hits = sum(replica.stats.prefix_hits or 0 for replica in pool.replicas if replica.stats)
        assert queries > 0 and hits / queries > 0.6, (hits, queries)
