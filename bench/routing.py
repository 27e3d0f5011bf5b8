#!/usr/bin/env python3
"""Routing benchmark: round-robin vs least-outstanding vs tiergate's routing (engine load + prefix
affinity), on replicas of unequal speed serving a shared-prefix workload. A command, not a test:

    python bench/routing.py [--requests 400] [--concurrency 32] [--quick] [--json]

Three simulated engines (`engines.simulator`, each its own process) run the fast profile at speeds 1x, 2x
and 5x slower (inter-token latency, TTFT base and prefill per token scaled alike), with 8 running slots each
so that queues form, and a prefix cache that holds about three of the workload's eight system prompts. The
workload: streamed chats, each with one of 8 system prompts of ~2,000 tokens and a short random user turn,
`--concurrency` at a time. Each mode gets freshly started engines (cold caches) and the same request
sequence, through `engines.EnginePool` in this process (real HTTP, the gateway's own engine client), routing
set by `PoolPolicy(routing=...)`; the affinity key is the gateway's (`engines.affinity.affinity_key`).

Reported per mode: TTFT p50/p99 (until the first event, as the gateway sees it), requests/s and output
tokens/s, the engines' prefix-cache hit rate (`vllm:prefix_cache_hits_total / queries_total` from their
/metrics) and each replica's share of the requests. Target (docs/benchmarks.md): tiergate's TTFT p99 at least
2x better than round-robin's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from overheadkit.procs import free_port, managed

from engines import (
    EngineHTTP,
    EnginePool,
    OpenAICompatEngine,
    PoolPolicy,
    RoutingMode,
    RoutingPolicy,
    Timeouts,
)
from engines.affinity import affinity_key

MODEL = "qwen3-8b"
MODES: tuple[RoutingMode, ...] = ("round_robin", "least_outstanding", "tiergate")
SLOWDOWNS = (1.0, 2.0, 5.0)  # replica speeds: the first is the fastest
BASE = {"itl_s": 0.004, "ttft_base_s": 0.02, "prefill_s_per_token": 0.00005}
ENGINE = {
    "max_num_seqs": 8,
    # 16-token blocks: room for ~4 of the 8 system prompts (~125 blocks each) and the user turns' blocks
    "prefix_cache_blocks": 600,
    "output_tokens_range": (24, 64),
}
SYSTEM_PROMPTS = 8
WORDS = [
    "account",
    "admin",
    "alert",
    "backup",
    "billing",
    "branch",
    "budget",
    "cache",
    "cluster",
    "config",
    "contract",
    "customer",
    "dashboard",
    "database",
    "deploy",
    "device",
    "discount",
    "invoice",
    "ledger",
    "license",
    "limit",
    "manual",
    "metric",
    "network",
    "order",
    "outage",
    "package",
    "partner",
    "payment",
    "policy",
    "portal",
    "premium",
    "pricing",
    "priority",
    "quota",
    "refund",
    "region",
    "release",
    "replica",
    "report",
    "request",
    "retention",
    "router",
    "schedule",
    "secret",
    "server",
    "service",
    "session",
    "storage",
    "support",
    "tenant",
    "ticket",
    "token",
    "upgrade",
    "usage",
    "vendor",
    "warranty",
    "webhook",
    "window",
    "workflow",
]


def engine_config(slowdown: float) -> dict[str, Any]:
    return {**{name: value * slowdown for name, value in BASE.items()}, **ENGINE}


def system_prompt(index: int) -> str:
    rng = random.Random(1000 + index)
    words = [rng.choice(WORDS) for _ in range(1500)]  # ~2,000 tokens by the simulator's tokenizer
    return f"You are support assistant #{index} of ACME. Follow the manual below.\n" + " ".join(words)


def workload(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    systems = [system_prompt(i) for i in range(SYSTEM_PROMPTS)]
    bodies = []
    for i in range(count):
        user = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
        bodies.append(
            {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": rng.choice(systems)},
                    {"role": "user", "content": f"Question {i}: {user}?"},
                ],
                "max_tokens": 64,
                "seed": i,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        )
    return bodies


_DEFAULTS = PoolPolicy()


@dataclass(frozen=True)
class Tuning:
    """The PoolPolicy knobs of tiergate's routing (defaults: PoolPolicy's)."""

    scrape_interval_s: float = _DEFAULTS.scrape_interval_s
    wait_weight: float = _DEFAULTS.routing.wait_weight
    kv_weight: float = _DEFAULTS.routing.kv_weight
    load_factor: float = _DEFAULTS.routing.load_factor


@dataclass
class ModeResult:
    mode: str
    requests: int
    errors: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    ttft_mean_ms: float
    requests_per_s: float
    output_tokens_per_s: float
    prefix_hit_rate: float
    cached_prompt_share: float  # from the responses' usage: cached / prompt tokens
    replica_share: list[float]  # of requests, fastest replica first


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[rank]


async def drive(pool: EnginePool, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    queue: Iterator[tuple[int, dict[str, Any]]] = iter(enumerate(bodies))
    ttfts: list[float] = []
    served: dict[str, int] = {}
    tokens = prompt = cached = errors = 0

    async def worker() -> None:
        nonlocal tokens, prompt, cached, errors
        for i, body in queue:
            started = time.perf_counter()
            try:
                stream = await pool.stream(
                    "/v1/chat/completions",
                    orjson.dumps(body),
                    request_id=f"bench-{i}",
                    affinity=affinity_key(body, chat=True),
                )
            except Exception as exc:
                errors += 1
                print(f"  request {i} failed: {exc!r}", file=sys.stderr)
                continue
            ttfts.append(time.perf_counter() - started)
            served[stream.replica.url] = served.get(stream.replica.url, 0) + 1
            try:
                async for _ in stream:
                    pass
            finally:
                await stream.aclose()
            if stream.usage is not None:
                tokens += stream.usage.completion_tokens
                prompt += stream.usage.prompt_tokens
                cached += stream.usage.cached_tokens

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "ttfts": ttfts,
        "served": served,
        "elapsed": elapsed,
        "tokens": tokens,
        "prompt": prompt,
        "cached": cached,
        "errors": errors,
    }


async def run_mode(
    mode: RoutingMode, urls: list[str], bodies: list[dict[str, Any]], concurrency: int, tuning: Tuning
) -> ModeResult:
    http = EngineHTTP.create()
    engines = [OpenAICompatEngine(url, http, Timeouts(first_token_s=120, idle_s=60)) for url in urls]
    routing = RoutingPolicy(
        mode=mode, wait_weight=tuning.wait_weight, kv_weight=tuning.kv_weight, load_factor=tuning.load_factor
    )
    policy = PoolPolicy(routing=routing, scrape_interval_s=tuning.scrape_interval_s)
    pool = EnginePool("bench", engines, policy)
    try:
        await pool.check_health()
        await pool.scrape_stats()
        pool.start()
        got = await drive(pool, bodies, concurrency)
        await pool.scrape_stats()
    finally:
        await pool.aclose()
        await http.aclose()
    queries = sum((replica.stats.prefix_queries or 0) for replica in pool.replicas if replica.stats)
    hits = sum((replica.stats.prefix_hits or 0) for replica in pool.replicas if replica.stats)
    ttfts = [t * 1000 for t in got["ttfts"]]
    done = len(ttfts)
    return ModeResult(
        mode=mode,
        requests=done,
        errors=got["errors"],
        ttft_p50_ms=percentile(ttfts, 0.5),
        ttft_p99_ms=percentile(ttfts, 0.99),
        ttft_mean_ms=statistics.fmean(ttfts) if ttfts else float("nan"),
        requests_per_s=done / got["elapsed"],
        output_tokens_per_s=got["tokens"] / got["elapsed"],
        prefix_hit_rate=hits / queries if queries else 0.0,
        cached_prompt_share=got["cached"] / got["prompt"] if got["prompt"] else 0.0,
        replica_share=[got["served"].get(url, 0) / max(done, 1) for url in urls],
    )


def run_simulator(config_json: str, port: int) -> None:
    """The --simulator mode: one simulated engine with the given config overrides, until killed."""
    import uvicorn

    from engines.simulator import create_simulator_app, profile

    overrides = json.loads(config_json)
    for name in ("output_tokens_range",):
        if name in overrides:
            overrides[name] = tuple(overrides[name])
    app = create_simulator_app(profile("fast", models=(MODEL,), **overrides))
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False, log_level="warning")


def measure_mode(
    mode: RoutingMode, bodies: list[dict[str, Any]], concurrency: int, logs: Path, tuning: Tuning
) -> ModeResult:
    """Fresh engines for each mode: no mode inherits another's warm prefix caches."""
    with ExitStack() as stack:
        procs = []
        for i, slowdown in enumerate(SLOWDOWNS):
            port = free_port()
            argv = [
                sys.executable,
                __file__,
                "--simulator",
                json.dumps(engine_config(slowdown)),
                "--port",
                str(port),
            ]
            proc = stack.enter_context(
                managed(
                    f"sim{i}", argv, base_url=f"http://127.0.0.1:{port}", log_path=logs / f"{mode}-sim{i}.log"
                )
            )
            procs.append(proc)
        for proc in procs:
            proc.wait_ready("/health", 60.0)
        urls = [proc.base_url for proc in procs]
        return asyncio.run(run_mode(mode, urls, bodies, concurrency, tuning))


def table(results: list[ModeResult]) -> str:
    lines = [
        "| routing | TTFT p50 (ms) | TTFT p99 (ms) | req/s | output tok/s | prefix-cache hit rate "
        "| requests per replica (1x / 2x / 5x slower) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        shares = " / ".join(f"{share:.0%}" for share in r.replica_share)
        lines.append(
            f"| {r.mode} | {r.ttft_p50_ms:.0f} | {r.ttft_p99_ms:.0f} | {r.requests_per_s:.1f} "
            f"| {r.output_tokens_per_s:.0f} | {r.prefix_hit_rate:.1%} | {shares} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--quick", action="store_true", help="120 requests: a smoke run")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--scrape-interval", type=float, default=Tuning.scrape_interval_s)
    parser.add_argument("--wait-weight", type=float, default=Tuning.wait_weight)
    parser.add_argument("--kv-weight", type=float, default=Tuning.kv_weight)
    parser.add_argument("--load-factor", type=float, default=Tuning.load_factor)
    parser.add_argument("--simulator", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.simulator is not None:
        run_simulator(args.simulator, args.port)
        return 0
    count = 120 if args.quick else args.requests
    bodies = workload(count, args.seed)
    modes = [mode for mode in MODES if mode in args.modes.split(",")]
    tuning = Tuning(args.scrape_interval, args.wait_weight, args.kv_weight, args.load_factor)
    results = []
    with tempfile.TemporaryDirectory(prefix="tiergate-routing-") as temp:
        for mode in modes:
            print(
                f"{mode}: {count} requests, concurrency {args.concurrency} ...", file=sys.stderr, flush=True
            )
            results.append(measure_mode(mode, bodies, args.concurrency, Path(temp), tuning))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(table(results))
    by_mode = {r.mode: r for r in results}
    if "round_robin" in by_mode and "tiergate" in by_mode:
        gain = by_mode["round_robin"].ttft_p99_ms / by_mode["tiergate"].ttft_p99_ms
        verdict = "PASS" if gain >= 2 else "FAIL"
        print(
            f"{verdict}  TTFT p99: round-robin / tiergate = {gain:.2f}x (target >= 2x)",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
