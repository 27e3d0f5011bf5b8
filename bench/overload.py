#!/usr/bin/env python3
"""Graceful overload (issue 19), measured from outside: one gateway worker with keys, limits and budgets in
Redis (`failure_mode: closed`), a price book and a ledger, in front of simulated engines. A command, not a
test:

    python bench/overload.py [--seconds 20] [--capacity 250] [--chunks 1000] [--clients 2] [--pin]
                             [--itl-ms 10] [--ttft-ms 5] [--deliberate-itl-ms 20]
                             [--phases 70%,2x,fast alone,flood] [--trace SECONDS] [--backoff retry-after]

Engines: the fast pool's is the instant upstream (overheadkit.upstream), its streams paced on one clock, a
token every `--itl-ms` after a first one at `--ttft-ms` (the prefill, 5 ms: as the simulator the bench used
before); the deliberate pool's is tiergate's simulator, reasoning 200-400 tokens, a token every
`--deliberate-itl-ms`. `--pin`: the gateway alone on CPU 0, the engines and the clients on the others, so
that what saturates is the gateway, not the machine.

Phases, each `--seconds` long, of closed-loop clients (each sends a request on its kept-alive connection,
reads it to its end, sends the next; after a refusal it waits 0.2 s, or with `--backoff retry-after` what the
refusal's retry-after-ms says, as the OpenAI SDKs do), raw HTTP/1.1 on asyncio sockets spread
over `--clients` processes:

1. `70%`: 0.7 x capacity concurrent fast streams of `--chunks` chunks;
2. `2x`: 2 x capacity concurrent fast streams;
3. `fast alone`: 20 concurrent short fast streams (32 chunks);
4. `flood`: the same 20 plus 0.8 x capacity concurrent deliberations (deliberate tier, streamed).

Reported per phase: the gateway's CPU and the machine's (cores' worth), statuses and codes, time to first byte
of accepted requests (p50, p99, and p99 of those sent after the phase's first 5 s), the time refusals took to
answer (p99) and whether each carried retry-after; after all phases, the replicas ejected or marked unhealthy
(the gateway's log), and the tenant's budget counter in Redis against the ledger. `--trace 0.25`: the
door's requests in flight, limit, the loop's utilization and lag, the refusals so far and requests' mean own
wait, four times a second through each phase (read from /metrics, so sparse: each read is a request the
gateway answers). Writes
bench/results/overload-<stamp>.json. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from overheadkit import procs, rediskeys
from overheadkit.cli import exit_on_signals
from overheadkit.door import door_metrics
from overheadkit.upstream import event_loop_runner, raise_open_file_limit

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
MODEL = "qwen3-8b"
TENANT = "bench"
FAST_ALONE = 20
SHORT_CHUNKS = 32
BACKOFF_S = 0.2
STAGGER_S = 2.0
LAG_TICK_S = 0.005  # a client process's own loop lag is sampled this often
SETTLED_S = 5.0  # a phase's requests sent after this are also reported apart (the surge of its start is over)
# the key's limits in each tier: real (every request passes the limiter, in Redis), far above what one worker
# can reach (a few hundred requests a second; a 1,000-token stream reserves about 10^3 tokens)
LIMITS = {"rpm": 100_000_000, "tpm": 10_000_000_000}


def serve_simulator(port: int, itl_s: float) -> None:
    """The deliberate pool's engine: tiergate's simulator, reasoning 200-400 tokens then answering 16-32,
    a token every `itl_s`."""
    import uvicorn

    from engines.simulator import create_simulator_app, profile

    config = profile(
        "deliberate",
        ttft_base_s=0.02,
        itl_s=itl_s,
        output_tokens_range=(16, 32),
        reasoning_tokens_range=(200, 400),
    )
    uvicorn.run(
        create_simulator_app(config), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def _env(tree: Path = REPO) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    env["PYTHONPATH"] = str(tree)
    return env


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the clients (in their own processes) -------------------------------------------------------------------


_CODE = re.compile(rb'"code"\s*:\s*"([^"]+)"')
_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)")
_RETRY_MS = re.compile(rb"(?im)^retry-after-ms:\s*(\d+)")
_END = b"\r\n0\r\n\r\n"  # a chunked body's last chunk (an SSE chunk's data ends with a newline, never a 0)


async def _exchange(reader: asyncio.StreamReader, start: float) -> dict[str, Any]:
    """One response read to its end: a stream's time to first byte, a refusal's code and retry-after.
    Nothing parsed past the head: at tens of thousands of chunks a second an HTTP client library would be
    what saturates the machine, not the gateway."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lowered = head.lower()
    if b"transfer-encoding: chunked" not in lowered:
        length = _LENGTH.search(head)
        body = await reader.readexactly(int(length.group(1))) if length else b""
        code = _CODE.search(body)
        return {
            "status": status,
            "code": code.group(1).decode() if code else None,
            "took": time.monotonic() - start,
            "retry_after": b"\r\nretry-after:" in lowered,
            "retry_after_ms": int(wait.group(1)) if (wait := _RETRY_MS.search(head)) else None,
            "close": b"connection: close" in lowered,
        }
    first = None
    tail = b""
    while True:
        data = await reader.read(1 << 16)
        if not data:
            raise ConnectionResetError("the stream ended before its last chunk")
        if first is None:
            first = time.monotonic() - start
        tail = (tail + data)[-len(_END) :]
        if tail == _END:
            break
    return {"status": status, "code": None, "ttfb": first, "took": time.monotonic() - start}


async def _client_loop(
    url: str,
    secret: str,
    body: bytes,
    until: float,
    out: list[dict[str, Any]],
    delay_s: float = 0.0,
    honour: bool = False,
) -> None:
    """A closed-loop client on one kept-alive connection, from `delay_s` on: a request, read to its end, the
    next. Each record's `at`: when its request was sent, in seconds from the loop's start. After a refusal it
    waits BACKOFF_S, or with `honour` what the refusal's `retry-after-ms` says (as the OpenAI SDKs do)."""
    began = time.monotonic()
    await asyncio.sleep(delay_s)
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 80
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: %b:%d\r\nauthorization: Bearer %b\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
        % (host.encode(), port, secret.encode(), len(body), body)
    )
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    while time.monotonic() < until:
        start = time.monotonic()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port, limit=1 << 17)
            assert reader is not None
            writer.write(request)
            async with asyncio.timeout(120):
                record = await _exchange(reader, start)
        except (OSError, EOFError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
            out.append({"status": 0, "code": type(exc).__name__, "took": time.monotonic() - start})
            if writer is not None:
                writer.close()
            writer = reader = None
            await asyncio.sleep(BACKOFF_S)
            continue
        if record.pop("close", False) and writer is not None:
            writer.close()
            writer = reader = None
        record["at"] = start - began
        out.append(record)
        if record["status"] != 200:
            wait_ms = record.get("retry_after_ms") if honour else None
            await asyncio.sleep(BACKOFF_S if wait_ms is None else wait_ms / 1000)
    if writer is not None:
        writer.close()


async def _own_lag(until: float, out: list[float]) -> None:
    """How late this client process's own loop wakes for a timer, every LAG_TICK_S: what it adds to the times
    it measures (a client busy reading hundreds of streams answers a refusal late too)."""
    while (start := time.monotonic()) < until:
        await asyncio.sleep(LAG_TICK_S)
        out.append(time.monotonic() - start - LAG_TICK_S)


def _client_process(
    url: str, secret: str, groups: list[tuple[str, bytes, int]], seconds: float, honour: bool
) -> str:
    async def main() -> dict[str, Any]:
        until = time.monotonic() + seconds
        results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in groups}
        lags: list[float] = []
        # each group's clients start evenly spread over STAGGER_S: streams of one length started together
        # would keep arriving in waves, each a burst the size of the whole load
        loops = [
            _client_loop(url, secret, body, until, results[name], STAGGER_S * i / count, honour)
            for name, body, count in groups
            for i in range(count)
        ]
        await asyncio.gather(_own_lag(until, lags), *loops)
        return {"records": results, "lag_p99_ms": _ms(_pct(lags, 0.99))}

    raise_open_file_limit()
    return json.dumps(event_loop_runner()(main()))


def run_phase(
    url: str,
    secret: str,
    groups: list[tuple[str, bytes, int]],
    seconds: float,
    clients: int,
    probe: tuple[str, bytes, int] | None = None,
    honour: bool = False,
) -> tuple[dict[str, list[dict[str, Any]]], list[float | None]]:
    """The phase's records by group, and each client process's own loop lag (p99, ms). `probe`: a group of
    its own in a process of its own, whose loop has little else to do: its times are the gateway's, not its
    client's."""
    shares = [
        [(name, body, count // clients + (i < count % clients)) for name, body, count in groups]
        for i in range(clients)
    ]
    if probe is not None:
        shares.append([probe])
    with multiprocessing.get_context("spawn").Pool(len(shares)) as pool:
        outs = pool.starmap(_client_process, [(url, secret, share, seconds, honour) for share in shares])
    merged: dict[str, list[dict[str, Any]]] = {name: [] for share in shares for name, _, _ in share}
    lags = []
    for out in outs:
        process = json.loads(out)
        lags.append(process["lag_p99_ms"])
        for name, records in process["records"].items():
            merged[name].extend(records)
    return merged, lags


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in records if r["status"] == 200]
    refused = [r for r in records if r["status"] != 200]
    ttfb = [r["ttfb"] for r in ok if r.get("ttfb") is not None]
    settled = [r["ttfb"] for r in ok if r.get("ttfb") is not None and r.get("at", 0) >= SETTLED_S]
    refusal_times = [r["took"] for r in refused if r["status"] in (429, 503)]
    return {
        "requests": len(records),
        "ok": len(ok),
        "codes": dict(Counter(f"{r['status']} {r['code']}" for r in refused)),
        "ttfb_p50_ms": _ms(_pct(ttfb, 0.5)),
        "ttfb_p99_ms": _ms(_pct(ttfb, 0.99)),
        "ttfb_p99_settled_ms": _ms(_pct(settled, 0.99)),  # sent after the first SETTLED_S of the phase
        "refusal_p99_ms": _ms(_pct(refusal_times, 0.99)),
        "refusals_with_retry_after": sum(1 for r in refused if r.get("retry_after")),
    }


def _mean_wait_ms(before: dict[str, float], after: dict[str, float]) -> float | None:
    """The mean of the phase's requests' own waits in the gateway (arrival to engine call, their tier's queue
    aside: `tiergate_gateway_wait_seconds`); None on a tree that does not count them."""
    count, total = "tiergate_gateway_wait_seconds_count", "tiergate_gateway_wait_seconds_sum"
    if count not in after:
        return None
    waits = after[count] - before.get(count, 0.0)
    return _ms((after[total] - before.get(total, 0.0)) / waits) if waits else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


# -- the gateway --------------------------------------------------------------------------------------------


def gateway_config(
    port: int, sims: dict[str, str], state: Path, token: str, redis_url: str, prefix: str, tree: Path = REPO
) -> dict[str, Any]:
    """`tree`: the gateway's source tree, whose own demo price book it reads (a baseline may not know a newer
    book's keys)."""
    return {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "info", "max_concurrent_requests": 1024},
        "auth": {"mode": "keys", "admin_tokens": [token]},
        "database": {"url": f"sqlite:///{state / 'keys.sqlite3'}"},
        "ledger": {"journal_dir": str(state / "journal"), "fsync": False},
        "pricing": {"book": str(tree / "gateway" / "prices.yaml")},
        "redis": {"url": redis_url, "prefix": prefix, "failure_mode": "closed"},
        "pools": {
            "fast": {"replicas": [sims["fast"]]},
            "deliberate": {"replicas": [sims["deliberate"]], "timeouts": {"first_token_s": 120.0}},
        },
        "models": {
            MODEL: {
                "max_model_len": 32768,
                "tiers": {"fast": {"pool": "fast"}, "deliberate": {"pool": "deliberate", "deliberation": {}}},
            },
            "llama-3.1-8b": {"tiers": {"fast": {"pool": "fast"}}},
            "qwen3-32b": {"tiers": {"deliberate": {"pool": "deliberate"}}},
        },
    }


async def setup_key(url: str, token: str) -> str:
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        (await client.post("/admin/tenants", json={"id": TENANT})).raise_for_status()
        budget = await client.put(f"/admin/tenants/{TENANT}/budgets/daily", json={"limit": "100000.00"})
        budget.raise_for_status()
        tiers = ["fast", "deliberate"]
        body = {"tenant": TENANT, "name": "bench", "tiers": tiers, "limits": dict.fromkeys(tiers, LIMITS)}
        key = await client.post("/admin/keys", json=body)
        key.raise_for_status()
        return str(key.json()["secret"])


async def counter_and_ledger(url: str, token: str, database_url: str) -> dict[str, Any]:
    """The tenant's daily budget counter (Redis, through the admin API) against the ledger, once the
    journal has drained (asked again for up to 60 s)."""
    sys.path.insert(0, str(REPO))
    from gateway.database import open_database
    from pricing.ledger import Ledger

    headers = {"authorization": f"Bearer {token}"}
    found: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        deadline = time.monotonic() + 60
        while True:
            budgets = (await client.get(f"/admin/tenants/{TENANT}/budgets")).json()["data"]
            daily = next(b for b in budgets if b["scope"] == "tenant" and b["period"] == "daily")
            db = await open_database(database_url)
            try:
                from datetime import UTC, datetime

                ledger = await Ledger(db).spent(datetime(2000, 1, 1, tzinfo=UTC), None, tenant=TENANT)
            finally:
                await db.aclose()
            found = {
                "counter_micros": daily["spent_micros"],
                "reserved_micros": daily.get("reserved_micros"),
                "ledger_micros": ledger,
            }
            if (
                found["counter_micros"] == ledger and not found["reserved_micros"]
            ) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(1)


_TRACED = {
    "tiergate_door_requests_in_flight": 1,
    "tiergate_door_limit": 2,
    "tiergate_event_loop_utilization": 3,
    "tiergate_event_loop_lag_seconds": 4,
}


@contextlib.contextmanager
def _tracing(url: str, every_s: float, started: float) -> Iterator[list[list[float]]]:
    """The door as the phase goes: every `every_s` (0: not traced), [seconds into the phase, requests in
    flight, limit, utilization, lag (ms), refusals so far, requests' mean own wait since the last read (ms)].
    Read from /metrics: each read is a request the gateway answers, so keep it sparse."""
    rows: list[list[float]] = []
    if not every_s:
        yield rows
        return
    stop = threading.Event()

    def sample() -> None:
        last: dict[str, float] = {}
        while not stop.wait(every_s):
            try:
                found = door_metrics(url)
            except httpx.HTTPError:
                continue
            row = [round(time.monotonic() - started, 2), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
            for name, value in found.items():
                if name in _TRACED:
                    row[_TRACED[name]] = round(value * (1000 if "lag" in name else 1), 3)
                elif name.startswith("tiergate_door_refusals_total"):
                    row[5] += value
            row[6] = _mean_wait_ms(last, found) or 0.0
            last = found
            rows.append(row)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield rows
    finally:
        stop.set()
        sampler.join()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--capacity", type=int, default=250, help="concurrent streams one worker serves well")
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--itl-ms", type=float, default=10.0, help="the fast engine's time between tokens")
    parser.add_argument(
        "--ttft-ms", type=float, default=5.0, help="the fast engine's time to its first token (prefill)"
    )
    parser.add_argument(
        "--deliberate-itl-ms", type=float, default=20.0, help="the deliberate engine's time between tokens"
    )
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument(
        "--probes",
        type=int,
        default=8,
        help="in the 70%% and 2x phases, this many more clients of short streams in a process of their own,"
        " whose loop is idle enough to time the gateway's answers, not its own (0: none)",
    )
    parser.add_argument(
        "--backoff",
        choices=("fixed", "retry-after"),
        default="fixed",
        help="after a refusal a client waits 0.2 s (fixed), or what its retry-after-ms says, as the OpenAI"
        " SDKs do (retry-after)",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--trace", type=float, default=0.0, help="read the door's metrics every this many seconds (0: never)"
    )
    parser.add_argument("--phases", default="70%,2x,fast alone,flood")
    parser.add_argument("--tree", type=Path, default=REPO, help="the gateway's source tree (e.g. a baseline)")
    parser.add_argument("--server", default="{}", help="JSON merged into the config's server section")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the gateway on CPU 0, everything else (simulators, clients) on the other CPUs: the gateway's"
        " saturation is its own, not the machine's",
    )
    parser.add_argument("--serve-simulator", nargs=2, metavar=("PORT", "ITL_MS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_simulator:
        port, itl_ms = args.serve_simulator
        serve_simulator(int(port), float(itl_ms) / 1000)
        return 0
    exit_on_signals()
    gateway_cpus: list[str] = []
    if args.pin:
        others = os.sched_getaffinity(0) - {0}
        if not others:
            parser.error("--pin needs two CPUs or more")
        os.sched_setaffinity(0, others)  # the simulators and client processes inherit it
        gateway_cpus = ["taskset", "-c", "0"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(f"/tmp/tiergate-overload-{stamp}")
    work.mkdir()
    prefix = f"bench-overload-{secrets.token_hex(4)}:"
    token = secrets.token_hex(16)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "phases": {}}
    with contextlib.ExitStack() as stack:
        sims = {}
        engines = {  # the fast one: the instant upstream, its streams paced on one clock (cheap to run)
            "fast": [
                *(sys.executable, "-m", "overheadkit.upstream", "{port}"),
                *("--paced-model", MODEL, "--itl-ms", str(args.itl_ms), "--ttft-ms", str(args.ttft_ms)),
            ],
            "deliberate": [
                sys.executable,
                __file__,
                "--serve-simulator",
                "{port}",
                str(args.deliberate_itl_ms),
            ],
        }
        for profile_name, template in engines.items():
            port = procs.free_port()
            argv = [arg.replace("{port}", str(port)) for arg in template]
            sim = stack.enter_context(
                procs.managed(
                    f"sim-{profile_name}",
                    argv,
                    base_url=f"http://127.0.0.1:{port}",
                    log_path=work / f"sim-{profile_name}.log",
                    env={**_env(), "PYTHONPATH": f"{REPO}{os.pathsep}{BENCH_DIR}"},
                )
            )
            sim.wait_ready("/health", 60)
            sims[profile_name] = sim.base_url
        port = procs.free_port()
        config = work / "tiergate.yaml"
        settings = gateway_config(port, sims, work, token, args.redis, prefix, args.tree)
        settings["server"].update(json.loads(args.server))
        config.write_text(json.dumps(settings))
        argv = [
            *gateway_cpus,
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(config),
            "--workers",
            "1",
        ]
        log = work / "gateway.log"
        gateway = stack.enter_context(
            procs.managed(
                "gateway",
                argv,
                base_url=f"http://127.0.0.1:{port}",
                log_path=log,
                env=_env(args.tree),
                cwd=work,
            )
        )
        stack.callback(rediskeys.delete, args.redis, prefix)
        gateway.wait_ready("/readyz", 90)
        url = gateway.base_url
        secret = asyncio.run(setup_key(url, token))
        long_fast = json.dumps(
            {
                "model": f"{MODEL}:fast",
                "messages": [{"role": "user", "content": "Tell me a long story."}],
                "stream": True,
                "max_tokens": args.chunks,
            }
        ).encode()
        short_fast = json.dumps(
            {
                "model": f"{MODEL}:fast",
                "messages": [{"role": "user", "content": "Hi"}],
                "stream": True,
                "max_tokens": SHORT_CHUNKS,
            }
        ).encode()
        deliberation = json.dumps(
            {
                "model": f"{MODEL}:deliberate",
                "messages": [{"role": "user", "content": "What is 15% of 240?"}],
                "stream": True,
                "reasoning_effort": "low",
            }
        ).encode()
        plans = {
            "70%": [("fast", long_fast, int(0.7 * args.capacity))],
            "2x": [("fast", long_fast, 2 * args.capacity)],
            "fast alone": [("fast", short_fast, FAST_ALONE)],
            "flood": [
                ("fast", short_fast, FAST_ALONE),
                ("deliberate", deliberation, int(0.8 * args.capacity)),
            ],
        }
        for phase in args.phases.split(","):
            print(f"phase {phase} ...", flush=True)
            started = time.monotonic()
            cpu, busy = procs.cpu_seconds(gateway.pid), procs.system_busy_seconds()
            before = door_metrics(url)
            probe = ("probe", short_fast, args.probes) if args.probes and phase in ("70%", "2x") else None
            with _tracing(url, args.trace, started) as trace:
                records, lags = run_phase(
                    url, secret, plans[phase], args.seconds, args.clients, probe, args.backoff != "fixed"
                )
            wall = time.monotonic() - started
            results["phases"][phase] = {name: summary(recs) for name, recs in records.items()}
            results["phases"][phase]["client_lag_p99_ms"] = lags  # each client process's, the probes' last
            results["phases"][phase]["metrics"] = after = door_metrics(url)
            results["phases"][phase]["gateway_wait_mean_ms"] = _mean_wait_ms(before, after)
            results["phases"][phase]["cpu"] = {  # cores' worth, over the phase (client start-up included)
                "gateway": round((procs.cpu_seconds(gateway.pid) - cpu) / wall, 2),
                "machine": round((procs.system_busy_seconds() - busy) / wall, 2),
            }
            print(f"  {time.monotonic() - started:.0f} s: {json.dumps(results['phases'][phase])}", flush=True)
            if trace:
                results["phases"][phase]["trace"] = trace
                print("  trace (s, in flight, limit, utilization, lag ms, refused, mean wait ms):")
                for row in trace:
                    print("   ", *row)
            time.sleep(3)
        text = log.read_text(errors="replace")
        results["ejected"] = text.count("ejecting")
        results["marked_unhealthy"] = text.count("is unhealthy")
        results["readyz"] = httpx.get(url + "/readyz", timeout=30).json()
        results["budget"] = asyncio.run(counter_and_ledger(url, token, f"sqlite:///{work / 'keys.sqlite3'}"))
        print(json.dumps({k: results[k] for k in ("ejected", "marked_unhealthy", "budget")}), flush=True)
    out = BENCH_DIR / "results" / f"overload-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
