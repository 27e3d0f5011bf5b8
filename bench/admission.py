#!/usr/bin/env python3
"""Admission on the README's key, before and after sizing reservations to the plan (issue 12): what a mixed
workload reserves against what it spends, and how much of it one key admits, for the baseline commit and
the current tree side by side in one run. A command, not a test:

    python bench/admission.py [--requests 100] [--concurrency 20] [--baseline 6ba0730]

The baseline is checked out with `git worktree add --detach` into a temporary folder (removed at exit) and
its gateway runs with this venv's Python and PYTHONPATH on that folder; the current tree's gateway runs
the same way from the repository. Both sit in front of the same two simulated engines (this tree's
simulator, profiles fast and deliberate, with latencies shortened so a deliberation takes a second or a
few), one after the other, each with its own SQLite key store. The model is qwen3-8b (max_model_len
32768 and, in a tree that has the setting, max_output_tokens 8192, as in config/example.yaml) with
`deliberation: {}` (the default levels) and gateway/prices.yaml.

The workload (seeded): 35% fast with max_tokens, 35% fast without, 12% / 12% / 6% deliberate at
reasoning_effort low / medium / high, short prompts (word problems, "2+2", a short explanation), 40% of
each kind streamed. Measured from outside the gateway, so one method serves both trees:

- reservation vs spend: each request on a fresh key of tpm 10^9 (a full GCRA bucket that no
  reservation can fill, so nothing is clamped): tokens reserved = 10^9 - x-ratelimit-remaining-tokens of
  its response, spent = usage.total_tokens; money reserved = the amount in the 429 insufficient_quota
  ("could cost up to X USD") that the same body gets on a key with a daily budget of 0, spent =
  usage.cost_micros;
- admission: the whole workload at --concurrency on one fresh README key (rpm 600, tpm 200000 in both
  tiers), admitted vs refused by status and code; then 8 concurrent low-effort deliberations on another;
- with the limits in Redis (a gateway with redis.url and a random prefix, deleted at the end): the
  workload's first 20 deliberations one after another, no pause, on a fresh README key: 429s.

Prints the tables and writes JSON and markdown copies to bench/results/admission-<stamp>.{json,md}.
Exit status: 0 when everything ran, 2 when something failed to run, 130 when interrupted. Every process
and the worktree are removed on every path out. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import redis
from overheadkit import procs, rediskeys
from overheadkit.cli import exit_on_signals
from overheadkit.procs import ManagedProcess, StartupError

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_BASELINE = "6ba0730"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MODEL = "qwen3-8b"
MAX_MODEL_LEN = 32768
TENANT = "bench"
README_RPM, README_TPM = 600, 200_000
# A bucket this deep is never clamped to, and a full one reads limit - reservation exactly.
WIDE_TPM = 10**9
TARGET_RATIO = 3.0
CONCURRENT_LOW = 8
SEQUENTIAL = 20
EXAMPLE_MAX_OUTPUT_TOKENS = 8192  # config/example.yaml's qwen3-8b, in trees that know the setting
# Latencies of the simulated engines: the profiles' shapes, shortened so that a high-effort deliberation
# (5 samples of 1,000+ reasoning tokens) takes a few seconds on this machine, not a minute.
SIM_LATENCY = {
    "fast": {"ttft_base_s": 0.02, "itl_s": 0.004},
    "deliberate": {"ttft_base_s": 0.05, "itl_s": 0.001},
}

FAST_BOUNDED, FAST_UNBOUNDED = "fast, max_tokens", "fast, no max_tokens"
LOW, MEDIUM, HIGH = "deliberate low", "deliberate medium", "deliberate high"
# Shares of the workload, in percent.
MIX = {FAST_BOUNDED: 35, FAST_UNBOUNDED: 35, LOW: 12, MEDIUM: 12, HIGH: 6}
KINDS = tuple(MIX)
EFFORTS = {LOW: "low", MEDIUM: "medium", HIGH: "high"}
FAST_ALL, DELIBERATE_ALL, ALL = "fast, all", "deliberate, all", "all"
# The rows of the tables: each kind, then the tiers, then the whole workload.
GROUPS = {
    **{kind: (kind,) for kind in KINDS},
    FAST_ALL: (FAST_BOUNDED, FAST_UNBOUNDED),
    DELIBERATE_ALL: tuple(EFFORTS),
    ALL: KINDS,
}
FAST_MAX_TOKENS = (64, 128, 256, 512)
STREAM_SHARE = 0.4
TWO_AND_TWO = {"role": "user", "content": "What is 2+2?"}
PROMPTS = (
    "What is 2+2?",
    "A train travels 120 km at 80 km/h. How many minutes does the trip take?",
    "Tom has 17 apples, gives away 5, then buys twice as many as he has left. How many apples has he now?",
    "If 3 pencils cost 45 cents, how much do 7 pencils cost?",
    "What is 15% of 240?",
    "A rectangle is 7 cm by 12 cm. What is its perimeter?",
    "Explain in two sentences why the sky is blue.",
    "Explain briefly what a hash table is.",
    "Why does ice float on water? Answer in one sentence.",
)
_COST_UP_TO = re.compile(r"could cost up to ([0-9]+(?:\.[0-9]+)?) ")


@dataclass(frozen=True)
class Item:
    """One request of the workload."""

    kind: str
    body: dict[str, Any]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


@dataclass
class Outcome:
    """What one request got back, as a client sees it."""

    kind: str
    status: int
    code: str | None = None  # error.code of a refusal
    remaining_tokens: int | None = None  # x-ratelimit-remaining-tokens
    retry_after: str | None = None
    total_tokens: int | None = None
    cost_micros: int | None = None
    message: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Tree:
    """A tree whose gateway is measured: its name in the tables, its root, and its commit."""

    name: str
    root: Path
    commit: str


@dataclass
class TreeResult:
    """Everything measured for one tree."""

    tree: Tree
    reservations: list[Outcome] = field(default_factory=list)  # per item, on a wide key
    money: list[Outcome] = field(default_factory=list)  # per item, on a key with a budget of 0
    workload: list[Outcome] = field(default_factory=list)  # the workload at --concurrency, one key
    workload_s: float = 0.0
    concurrent_low: list[Outcome] = field(default_factory=list)
    sequential: list[Outcome] = field(default_factory=list)  # Redis limits; empty when not run
    sequential_s: float = 0.0
    error: str | None = None


# -- the workload ------------------------------------------------------------------------------------------


def build_workload(count: int, seed: int) -> list[Item]:
    """`count` requests in MIX's shares (largest remainders), shuffled by `seed`."""
    rng = random.Random(seed)
    exact = {kind: count * share / 100 for kind, share in MIX.items()}
    counts = {kind: int(value) for kind, value in exact.items()}
    by_remainder = sorted(MIX, key=lambda kind: exact[kind] - counts[kind], reverse=True)
    for kind in by_remainder[: count - sum(counts.values())]:
        counts[kind] += 1
    kinds = [kind for kind in KINDS for _ in range(counts[kind])]
    rng.shuffle(kinds)
    return [Item(kind, _body(kind, rng)) for kind in kinds]


def _body(kind: str, rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": rng.choice(PROMPTS)}]}
    if kind in EFFORTS:
        body["model"] = f"{MODEL}:deliberate"
        body["reasoning_effort"] = EFFORTS[kind]
    else:
        body["model"] = f"{MODEL}:fast"
        if kind == FAST_BOUNDED:
            body["max_tokens"] = rng.choice(FAST_MAX_TOKENS)
    if rng.random() < STREAM_SHARE:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


# -- one request, as a client sends it -------------------------------------------------------------------


async def send(client: httpx.AsyncClient, key: str, item: Item) -> Outcome:
    """POST the item with `key`; the body is read to its end (a stream to [DONE]), nothing is retried."""
    started = time.monotonic()
    headers = {"authorization": f"Bearer {key}"}
    async with client.stream("POST", "/v1/chat/completions", json=item.body, headers=headers) as resp:
        outcome = Outcome(item.kind, resp.status_code, retry_after=resp.headers.get("retry-after"))
        remaining = resp.headers.get("x-ratelimit-remaining-tokens")
        outcome.remaining_tokens = int(remaining) if remaining is not None else None
        if resp.status_code != 200:
            _read_error(outcome, await resp.aread())
        elif item.stream:
            usage = None
            async for line in resp.aiter_lines():
                if line.startswith("data:") and line[5:].strip() != "[DONE]":
                    chunk = json.loads(line[5:])
                    usage = chunk.get("usage") or usage
            _read_usage(outcome, usage)
        else:
            _read_usage(outcome, json.loads(await resp.aread()).get("usage"))
    outcome.seconds = time.monotonic() - started
    return outcome


def _read_error(outcome: Outcome, raw: bytes) -> None:
    try:
        error = json.loads(raw)["error"]
        outcome.code, outcome.message = str(error.get("code")), str(error.get("message"))
    except (ValueError, KeyError, TypeError, AttributeError):
        outcome.code, outcome.message = "unreadable", raw[:300].decode(errors="replace")


def _read_usage(outcome: Outcome, usage: dict[str, Any] | None) -> None:
    if usage is None:
        outcome.code = "no_usage"  # a 200 without usage cannot be compared with its reservation
        return
    outcome.total_tokens = int(usage["total_tokens"])
    cost = usage.get("cost_micros")
    outcome.cost_micros = int(cost) if cost is not None else None


def money_bound(outcome: Outcome) -> int | None:
    """Micros from a 429 insufficient_quota's "could cost up to X USD"."""
    if outcome.code != "insufficient_quota" or outcome.message is None:
        return None
    found = _COST_UP_TO.search(outcome.message)
    return int(Decimal(found.group(1)) * 1_000_000) if found else None


# -- the gateway's admin API -------------------------------------------------------------------------------


class Admin:
    """Tenants, keys and budgets through a running gateway's admin API."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self._client, self._headers = client, {"authorization": f"Bearer {token}"}

    async def _call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self._client.request(method, path, json=body, headers=self._headers)
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:300]}")
        data: dict[str, Any] = resp.json()
        return data

    async def tenant(self) -> None:
        await self._call("POST", "/admin/tenants", {"id": TENANT})

    async def key(self, name: str, tpm: int | None, daily_budget: str | None = None) -> str:
        """A key of both tiers with rpm 600 and `tpm` (no limits when None); returns its secret."""
        limits = {} if tpm is None else {t: {"rpm": README_RPM, "tpm": tpm} for t in ("fast", "deliberate")}
        body = {"tenant": TENANT, "name": name, "tiers": ["fast", "deliberate"], "limits": limits}
        key = await self._call("POST", "/admin/keys", body)
        if daily_budget is not None:
            await self._call("PUT", f"/admin/keys/{key['id']}/budgets/daily", {"limit": daily_budget})
        return str(key["secret"])


# -- the phases ----------------------------------------------------------------------------------------------


async def gather_limited(concurrency: int, jobs: Sequence[Coroutine[Any, Any, Outcome]]) -> list[Outcome]:
    """Await the coroutines `jobs`, at most `concurrency` at a time, results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Coroutine[Any, Any, Outcome]) -> Outcome:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(job) for job in jobs)))


async def measure_reservations(
    client: httpx.AsyncClient, admin: Admin, items: Sequence[Item], result: TreeResult
) -> None:
    """Each item on a fresh wide key (tokens reserved, spent), and on a key with a budget of 0 (money)."""
    broke = await admin.key("broke", None, daily_budget="0")

    async def on_fresh_key(index: int, item: Item) -> Outcome:
        return await send(client, await admin.key(f"wide-{index}", WIDE_TPM), item)

    started = time.monotonic()
    result.reservations = await gather_limited(8, [on_fresh_key(i, item) for i, item in enumerate(items)])
    result.money = await gather_limited(8, [send(client, broke, item) for item in items])
    _progress(f"reservations and spend of {len(items)} requests", started)


async def measure_admission(
    client: httpx.AsyncClient, admin: Admin, items: Sequence[Item], concurrency: int, result: TreeResult
) -> None:
    key = await admin.key("readme", README_TPM)
    started = time.monotonic()
    result.workload = await gather_limited(concurrency, [send(client, key, item) for item in items])
    result.workload_s = _progress(f"the workload at concurrency {concurrency} on one key", started)
    # the example: a low-effort "2+2"
    low = Item(LOW, {"model": f"{MODEL}:deliberate", "reasoning_effort": "low", "messages": [TWO_AND_TWO]})
    key = await admin.key("readme-low", README_TPM)
    started = time.monotonic()
    result.concurrent_low = list(
        await asyncio.gather(*(send(client, key, low) for _ in range(CONCURRENT_LOW)))
    )
    _progress(f"{CONCURRENT_LOW} concurrent low-effort deliberations", started)


async def measure_sequential(
    client: httpx.AsyncClient, admin: Admin, items: Sequence[Item], result: TreeResult
) -> None:
    key = await admin.key("readme-sequential", README_TPM)
    deliberations = [item for item in items if item.kind in EFFORTS][:SEQUENTIAL]
    started = time.monotonic()
    for item in deliberations:  # the next one leaves as soon as the last byte of the previous arrived
        result.sequential.append(await send(client, key, item))
    result.sequential_s = _progress(f"{len(deliberations)} sequential deliberations", started)


def _progress(what: str, started: float) -> float:
    seconds = time.monotonic() - started
    print(f"  {what}: {seconds:.1f} s", flush=True)
    return seconds


# -- processes -------------------------------------------------------------------------------------------


def _env(pythonpath: Path) -> dict[str, str]:
    # TIERGATE_* variables override the config: one left in the shell would change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    env["PYTHONPATH"] = str(pythonpath)
    return env


def start_simulator(
    stack: contextlib.ExitStack, tree: Tree, profile: str, logs: Path, work: Path
) -> ManagedProcess:
    port = procs.free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-simulator", profile, "--port", str(port)]
    sim = stack.enter_context(
        procs.managed(
            f"simulator-{tree.name}-{profile}",
            argv,
            base_url=f"http://127.0.0.1:{port}",
            log_path=logs / f"simulator-{tree.name}-{profile}.log",
            env=_env(REPO),
            cwd=work,
        )
    )
    sim.wait_ready("/health", 60)
    return sim


def serve_simulator(profile_name: str, port: int) -> None:
    """`tiergate simulate --profile NAME`, with SIM_LATENCY's shorter latencies (the CLI has no flags)."""
    import uvicorn

    from engines.simulator import create_simulator_app, profile

    config = profile(profile_name, **SIM_LATENCY[profile_name])
    uvicorn.run(
        create_simulator_app(config), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def gateway_config(
    tree: Tree,
    port: int,
    sims: dict[str, ManagedProcess],
    state: Path,
    admin_token: str,
    redis_store: tuple[str, str] | None,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "auth": {"mode": "keys", "admin_tokens": [admin_token]},
        "database": {"url": f"sqlite:///{state / 'keys.sqlite3'}"},
        "ledger": {"journal_dir": str(state / "journal"), "fsync": False},
        "pricing": {"book": str(tree.root / "gateway" / "prices.yaml")},
        "pools": {
            "fast": {"replicas": [sims["fast"].base_url]},
            "deliberate": {"replicas": [sims["deliberate"].base_url], "timeouts": {"first_token_s": 120.0}},
        },
        "models": {
            MODEL: {
                "max_model_len": MAX_MODEL_LEN,
                "tiers": {"fast": {"pool": "fast"}, "deliberate": {"pool": "deliberate", "deliberation": {}}},
            },
            # not used: the price book prices them, and a gateway refuses a book that prices what it lacks
            "llama-3.1-8b": {"tiers": {"fast": {"pool": "fast"}}},
            "qwen3-32b": {"tiers": {"deliberate": {"pool": "deliberate"}}},
        },
    }
    if "max_output_tokens" in (tree.root / "gateway" / "settings.py").read_text(encoding="utf-8"):
        # a tree that has the setting gets config/example.yaml's value (the baseline had none)
        config["models"][MODEL]["max_output_tokens"] = EXAMPLE_MAX_OUTPUT_TOKENS
    if redis_store is not None:  # (url, prefix)
        # closed: a Redis failure shows as 503s instead of quietly serving without limits
        config["redis"] = {"url": redis_store[0], "prefix": redis_store[1], "failure_mode": "closed"}
    return config


def _delete_redis_keys(url: str, prefix: str) -> None:
    try:
        rediskeys.delete(url, prefix)
    except redis.RedisError as exc:
        print(f"could not delete the Redis keys under {prefix!r}: {exc}", file=sys.stderr)


@contextlib.contextmanager
def gateway(
    tree: Tree,
    label: str,
    sims: dict[str, ManagedProcess],
    work: Path,
    logs: Path,
    redis_store: tuple[str, str] | None,
) -> Iterator[tuple[ManagedProcess, str]]:
    """A gateway of `tree` (stopped at the end) and its admin token."""
    state = work / f"{tree.name}-{label}"
    state.mkdir()
    port, token = procs.free_port(), secrets.token_hex(16)
    config_path = state / "tiergate.yaml"
    # JSON is YAML too: no YAML writer needed.
    config_path.write_text(json.dumps(gateway_config(tree, port, sims, state, token, redis_store), indent=2))
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)]
    with procs.managed(
        f"gateway-{tree.name}-{label}",
        argv,
        base_url=f"http://127.0.0.1:{port}",
        log_path=logs / f"gateway-{tree.name}-{label}.log",
        env=_env(tree.root),
        cwd=state,
    ) as proc:
        proc.wait_ready("/readyz", 90)
        yield proc, token


@contextlib.contextmanager
def worktree(commit: str, work: Path) -> Iterator[Path]:
    """The baseline checked out in a detached worktree, removed (and pruned) on the way out."""
    path = work / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
            check=False,
            capture_output=True,
        )
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False, capture_output=True)


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def current_commit() -> str:
    head = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "gateway", "engines", "pricing")
    return f"{head}{' + uncommitted changes' if dirty else ''}"


# -- one tree ----------------------------------------------------------------------------------------------


async def _run_phases(
    base_url: str, token: str, items: Sequence[Item], concurrency: int, result: TreeResult, sequential: bool
) -> None:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        admin = Admin(client, token)
        await admin.tenant()
        if sequential:
            await measure_sequential(client, admin, items, result)
            return
        await measure_reservations(client, admin, items, result)
        await measure_admission(client, admin, items, concurrency, result)


def measure_tree(
    tree: Tree, items: Sequence[Item], args: argparse.Namespace, work: Path, logs: Path
) -> TreeResult:
    """Every phase on `tree`, behind simulators of its own (so both trees start with cold prefix caches)."""
    result = TreeResult(tree)
    try:
        with contextlib.ExitStack() as stack:
            sims = {profile: start_simulator(stack, tree, profile, logs, work) for profile in SIM_LATENCY}
            print(f"{tree.name} ({tree.commit}): in-process limits", flush=True)
            with gateway(tree, "local", sims, work, logs, None) as (proc, token):
                asyncio.run(_run_phases(proc.base_url, token, items, args.concurrency, result, False))
            if args.redis_url:
                print(f"{tree.name} ({tree.commit}): limits in Redis", flush=True)
                prefix = f"tiergate-bench-admission:{secrets.token_hex(6)}:"
                # registered first, so it runs once the gateway has stopped (and written its last settlements)
                stack.callback(_delete_redis_keys, args.redis_url, prefix)
                with gateway(tree, "redis", sims, work, logs, (args.redis_url, prefix)) as (proc, token):
                    asyncio.run(_run_phases(proc.base_url, token, items, args.concurrency, result, True))
    except (StartupError, RuntimeError, httpx.HTTPError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        print(f"{tree.name}: FAILED: {result.error}", flush=True)
    return result


# -- the figures ---------------------------------------------------------------------------------------------


def _mean(values: Sequence[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def spend_row(result: TreeResult, group: str) -> dict[str, Any]:
    """Means over the group's requests that were served and whose money bound was read."""
    kinds = GROUPS[group]
    pairs = [(r, m) for r, m in zip(result.reservations, result.money, strict=True) if r.kind in kinds]
    served = [(r, m) for r, m in pairs if r.status == 200 and r.code is None]
    tokens = [WIDE_TPM - r.remaining_tokens for r, _ in served if r.remaining_tokens is not None]
    actual_tokens = [r.total_tokens for r, _ in served if r.total_tokens is not None]
    bounds = [b for _, m in served if (b := money_bound(m)) is not None]
    costs = [r.cost_micros for r, _ in served if r.cost_micros is not None]
    reserved_t, spent_t = _mean(tokens), _mean(actual_tokens)
    reserved_m, spent_m = _mean(bounds), _mean(costs)
    return {
        "group": group,
        "n": len(pairs),
        "served": len(served),
        "reserved_tokens": reserved_t,
        "actual_tokens": spent_t,
        "token_ratio": _ratio(reserved_t, spent_t),
        "max_reserved_tokens": max(tokens, default=None),
        "reserved_micros": reserved_m,
        "actual_micros": spent_m,
        "money_ratio": _ratio(reserved_m, spent_m),
        "money_bounds_read": len(bounds),
        "not_served": dict(
            Counter(f"{r.status} {r.code}" for r, _ in pairs if not (r.status == 200 and r.code is None))
        ),
    }


def admission_row(outcomes: Sequence[Outcome], group: str) -> dict[str, Any]:
    chosen = [o for o in outcomes if o.kind in GROUPS[group]]
    admitted = sum(1 for o in chosen if o.status == 200 and o.code is None)
    refused = Counter(f"{o.status} {o.code}" for o in chosen if not (o.status == 200 and o.code is None))
    # what the admitted requests really spent: how much of the key's minute the workload used
    spent = sum(o.total_tokens or 0 for o in chosen if o.status == 200)
    first_refused = next((i + 1 for i, o in enumerate(chosen) if o.status == 429), None)
    return {
        "group": group,
        "n": len(chosen),
        "admitted": admitted,
        "refused": dict(refused),
        "spent_tokens": spent,
        "first_refused": first_refused,
    }


def summarise(result: TreeResult) -> dict[str, Any]:
    retry_after = [o.retry_after for o in result.sequential if o.status == 429 and o.retry_after]
    return {
        "tree": result.tree.name,
        "commit": result.tree.commit,
        "error": result.error,
        "spend": [spend_row(result, group) for group in GROUPS],
        "admission": [admission_row(result.workload, group) for group in GROUPS],
        "workload_s": result.workload_s,
        "concurrent_low": admission_row(result.concurrent_low, ALL),
        "sequential": {
            **admission_row(result.sequential, ALL),
            "retry_after": retry_after,
            "seconds": result.sequential_s,
        },
    }


def _num(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _refused(row: dict[str, Any]) -> str:
    return ", ".join(f"{n} x {what}" for what, n in sorted(row["refused"].items())) or "none"


def tables(summaries: Sequence[dict[str, Any]]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each table."""
    spend_header = [
        "kind",
        "tree",
        "n",
        "reserved tok",
        "spent tok",
        "ratio",
        "reserved µ$",
        "spent µ$",
        "ratio",
    ]
    spend_rows = []
    for index, kind in enumerate(GROUPS):
        for summary in summaries:
            row = summary["spend"][index]
            served = f"{row['served']}" if row["served"] == row["n"] else f"{row['served']}/{row['n']}"
            spend_rows.append(
                [
                    kind,
                    summary["tree"],
                    served,
                    _num(row["reserved_tokens"]),
                    _num(row["actual_tokens"]),
                    _num(row["token_ratio"], ".1f") + "x" if row["token_ratio"] else "-",
                    _num(row["reserved_micros"]),
                    _num(row["actual_micros"]),
                    _num(row["money_ratio"], ".1f") + "x" if row["money_ratio"] else "-",
                ]
            )
    admission_header = ["kind", "tree", "n", "admitted", "spent tok (admitted)", "refused (status code)"]
    admission_rows = []
    for index, kind in enumerate(GROUPS):
        for summary in summaries:
            row = summary["admission"][index]
            admission_rows.append(
                [
                    kind,
                    summary["tree"],
                    str(row["n"]),
                    str(row["admitted"]),
                    _num(row["spent_tokens"]),
                    _refused(row),
                ]
            )
    other_header = ["check", "tree", "admitted", "refused (status code)", "note"]
    other_rows = []
    for summary in summaries:
        row = summary["concurrent_low"]
        other_rows.append(
            [
                f"{CONCURRENT_LOW} concurrent low",
                summary["tree"],
                f"{row['admitted']}/{row['n']}",
                _refused(row),
                "",
            ]
        )
    for summary in summaries:
        row = summary["sequential"]
        if row["n"]:
            waits = sorted({int(w) for w in row["retry_after"]})
            note = f"{row['seconds']:.1f} s"
            if row["first_refused"] is not None:
                note += (
                    f"; first 429 on call {row['first_refused']}, retry-after {', '.join(map(str, waits))} s"
                )
            other_rows.append(
                [
                    f"{row['n']} sequential, Redis",
                    summary["tree"],
                    f"{row['admitted']}/{row['n']}",
                    _refused(row),
                    note,
                ]
            )
    return [
        ("Reservation vs spend, per request (means; fresh key each)", spend_header, spend_rows),
        ("The workload at once, one README key (rpm 600, tpm 200000)", admission_header, admission_rows),
        ("Deliberations on a README key", other_header, other_rows),
    ]


# Columns of words, aligned left; the others hold figures, aligned right.
_TEXT_COLUMNS = frozenset({"kind", "tree", "check", "refused (status code)", "note"})


def render_text(title: str, header: list[str], rows: list[list[str]]) -> str:
    grid = [header, *rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if name in _TEXT_COLUMNS else cell.rjust(w)
            for name, cell, w in zip(header, line, widths, strict=True)
        )
        for line in grid
    ]
    return "\n".join([title, *lines])


def render_markdown(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" if name in _TEXT_COLUMNS else "---:" for name in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdicts(summaries: Sequence[dict[str, Any]]) -> list[str]:
    after = summaries[-1]
    lines = []
    for row in after["spend"]:
        if row["group"] not in (DELIBERATE_ALL, ALL):
            continue
        for name, unit in (("token", "tokens"), ("money", "money")):
            value = row[f"{name}_ratio"]
            if value is not None:
                verdict = "PASS" if value <= TARGET_RATIO else "FAIL"
                lines.append(
                    f"{verdict}  {after['tree']}, {row['group']}: mean reservation / mean spend in {unit} "
                    f"{value:.1f}x (target <= {TARGET_RATIO:g}x)"
                )
    low = after["concurrent_low"]
    verdict = "PASS" if low["admitted"] == low["n"] == CONCURRENT_LOW else "FAIL"
    lines.append(
        f"{verdict}  {after['tree']}: {low['admitted']} of {CONCURRENT_LOW} concurrent low-effort admitted"
    )
    sequential = after["sequential"]
    if sequential["n"]:
        refused = sequential["n"] - sequential["admitted"]
        verdict = "PASS" if refused == 0 else "FAIL"
        lines.append(
            f"{verdict}  {after['tree']}: {refused} of {sequential['n']} sequential deliberations refused"
            " (limits in Redis)"
        )
    return lines


def collect_meta(args: argparse.Namespace, trees: Sequence[Tree], items: Sequence[Item]) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    counts = Counter(item.kind for item in items)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.platform()})",
        "cpu": cpu,
        "python": platform.python_version(),
        "command": " ".join(["bench/admission.py", *sys.argv[1:]]),
        "trees": {tree.name: tree.commit for tree in trees},
        "workload": f"{len(items)} requests, seed {args.seed}: "
        + ", ".join(f"{counts[kind]} {kind}" for kind in KINDS)
        + f"; {sum(item.stream for item in items)} streamed",
        "model": f"{MODEL}, max_model_len {MAX_MODEL_LEN}, deliberation: {{}}, gateway/prices.yaml",
        "engines": f"this tree's simulator, profiles fast and deliberate, latencies {SIM_LATENCY}",
        "concurrency": args.concurrency,
        "redis": args.redis_url or "not run",
    }


def write_results(
    stamp: str, meta: dict[str, Any], summaries: list[dict[str, Any]], raw: list[TreeResult]
) -> list[Path]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    paths = [RESULTS_DIR / f"admission-{stamp}.json", RESULTS_DIR / f"admission-{stamp}.md"]
    outcomes = {
        r.tree.name: {
            "reservations": [asdict(o) for o in r.reservations],
            "money": [asdict(o) for o in r.money],
            "workload": [asdict(o) for o in r.workload],
            "concurrent_low": [asdict(o) for o in r.concurrent_low],
            "sequential": [asdict(o) for o in r.sequential],
        }
        for r in raw
    }
    payload = {"meta": meta, "summaries": summaries, "verdicts": verdicts(summaries), "outcomes": outcomes}
    paths[0].write_text(json.dumps(payload, indent=2) + "\n")
    meta_lines = [f"- {k}: {v}" for k, v in meta.items()]
    body = [render_markdown(*table) for table in tables(summaries)]
    paths[1].write_text(
        "\n\n".join(["\n".join(meta_lines), *body, "\n".join(f"- {v}" for v in verdicts(summaries))]) + "\n"
    )
    return paths


# -- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100, help="size of the workload (default 100)")
    parser.add_argument("--concurrency", type=int, default=20, help="of the workload on one key (default 20)")
    parser.add_argument(
        "--baseline", default=DEFAULT_BASELINE, help=f"commit to compare with ({DEFAULT_BASELINE})"
    )
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"for the sequential check ({DEFAULT_REDIS_URL}); '' skips it",
    )
    # internal: how this script runs a simulated engine with its latencies
    parser.add_argument("--serve-simulator", choices=sorted(SIM_LATENCY), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_simulator:
        serve_simulator(args.serve_simulator, args.port)
        return 0
    exit_on_signals()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = RESULTS_DIR / "logs" / f"admission-{stamp}"
    items = build_workload(args.requests, args.seed)
    results: list[TreeResult] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="tiergate-bench-admission-") as temp,
            contextlib.ExitStack() as stack,
        ):
            work = Path(temp)
            baseline = stack.enter_context(worktree(args.baseline, work))
            trees = [
                Tree("before", baseline, _git("rev-parse", "--short", args.baseline)),
                Tree("after", REPO, current_commit()),
            ]
            results = [measure_tree(tree, items, args, work, logs) for tree in trees]
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except (StartupError, subprocess.CalledProcessError) as exc:
        print(f"could not start: {exc}", file=sys.stderr)
        return 2
    summaries = [summarise(result) for result in results]
    meta = collect_meta(args, trees, items)
    print()
    for table in tables(summaries):
        print(render_text(*table), end="\n\n")
    print("\n".join(verdicts(summaries)))
    for path in write_results(stamp, meta, summaries, results):
        print(f"wrote {path.relative_to(REPO)}")
    return 2 if any(result.error for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
