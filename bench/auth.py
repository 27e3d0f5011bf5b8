#!/usr/bin/env python3
"""Cost of API keys and rate limits on tiergate's hot path: no auth vs keys with in-process limits vs keys
with limits in Redis, side by side in one run.

    python bench/auth.py [--duration 10] [--quick] [--strict]

Starts a zero-latency simulator and three tiergate gateways in front of it, one per configuration:

    no-auth     auth.mode: disabled (the baseline)
    keys-local  auth.mode: keys, keys in SQLite, rate limits in the gateway process
    keys-redis  the same plus redis.url: rate limits in Redis (a random key prefix, deleted at the end)

For each keyed gateway a tenant and a key with limits far above anything the run can reach are created with
the tiergate CLI before the gateway starts; wrk sends that key. The same small non-streaming chat request as
bench/overhead.py is measured at concurrency 1 and 50, the three configurations interleaved at each
concurrency so that a drifting machine affects them alike. Prints one table plus PASS/FAIL against the
target (keys + Redis limits add at most 0.5 ms to p50 at c=1) and writes JSON and markdown copies to
bench/results/. See docs/benchmarks.md.

Exit status: 0 when everything ran (target met or not), 1 when --strict and the target was missed, 2 when
something failed to run or a measurement was invalid (any non-2xx, e.g. a 429, bad body or socket error),
130 when interrupted. All servers are stopped, and the run's Redis keys deleted, on every path out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import overhead
import redis
from overheadkit import admin_cli, chat, procs, rediskeys, servers, wrk
from overheadkit.chat import Mode
from overheadkit.cli import add_run_options, exit_on_signals
from overheadkit.measure import Settings
from overheadkit.procs import ManagedProcess, StartupError
from overheadkit.report import HIGH_CONCURRENCY, LOW_CONCURRENCY, TIERGATE, Check, Row, fmt

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = overhead.RESULTS_DIR
NO_AUTH, KEYS_LOCAL, KEYS_REDIS = "no-auth", "keys-local", "keys-redis"
ALL_CONFIGS = (NO_AUTH, KEYS_LOCAL, KEYS_REDIS)
DESCRIPTIONS = {
    NO_AUTH: "auth.mode: disabled",
    KEYS_LOCAL: "auth.mode: keys, SQLite key store, in-process rate limits",
    KEYS_REDIS: "auth.mode: keys, SQLite key store, rate limits in Redis",
}
CONCURRENCIES = (LOW_CONCURRENCY, HIGH_CONCURRENCY)
MODE = Mode.NON_STREAM
MAX_REDIS_ADDED_P50_MS = 0.5
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
RATE_LIMIT_HEADER = "x-ratelimit-limit-requests"
TENANT = "bench"
TIER = "fast"
# Far above what one worker can serve (a few thousand req/s is ~10^5 a minute, ~10^7 tokens a minute), so a
# key is never refused during a run; a 429 would show up as non-2xx and invalidate the row.
KEY_RPM = 100_000_000
KEY_TPM = 10_000_000_000
# With such limits a bucket drains within a millisecond and its Redis key expires as fast, so a second key
# with a slow bucket (one request keeps it in Redis for 60/PROBE_RPM s) shows the limits really are there.
PROBE_RPM = 6
PROBE_TPM = 1_000_000


@dataclass(frozen=True)
class Run:
    settings: Settings
    configs: tuple[str, ...]
    redis_url: str
    # Random per run, so concurrent runs and other users of the same Redis never share or lose keys.
    redis_prefix: str
    admin_token: str


@dataclass(frozen=True)
class Gateway:
    """A started, verified gateway and what its load runs need."""

    config: str
    proc: ManagedProcess
    headers: dict[str, str]
    script: Path
    # keys-redis only: the slow-bucket key that verification uses to find the gateway's buckets in Redis
    probe_headers: dict[str, str] | None
    # The redis-server whose CPU during this gateway's rows is counted as part of the configuration.
    redis_pid: int | None


@dataclass
class AuthRow(Row):
    """overheadkit's row (`target` holds the configuration) plus what this benchmark adds to it."""

    redis_cpu_pct: float | None = None
    # req/s as a fraction of the no-auth row at the same concurrency
    rps_vs_baseline: float | None = None

    @property
    def config(self) -> str:
        return self.target


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_options(
        parser,
        warmup_help="warm-up seconds per gateway (default 2)",
        strict_help="exit 1 when the target is missed",
    )
    parser.add_argument(
        "--configs",
        default=",".join(ALL_CONFIGS),
        help="comma-separated subset of: " + ", ".join(ALL_CONFIGS),
    )
    parser.add_argument(
        "--redis-url", default=DEFAULT_REDIS_URL, help=f"Redis for keys-redis (default {DEFAULT_REDIS_URL})"
    )
    parser.add_argument("--tiergate-cmd", default=None, help="tiergate CLI to use (default: the repo venv's)")
    args = parser.parse_args(argv)
    unknown = set(args.configs.split(",")) - set(ALL_CONFIGS)
    if unknown:
        parser.error(f"unknown configs: {', '.join(sorted(unknown))}")
    return args


def make_run(args: argparse.Namespace, work_dir: Path, stamp: str) -> Run:
    chosen = set(args.configs.split(","))
    settings = Settings(
        duration_s=args.duration if args.duration is not None else (3.0 if args.quick else 10.0),
        warmup_s=args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0),
        targets=(TIERGATE,),
        tiergate_cmd=servers.tiergate_base_command(args.tiergate_cmd),
        strict=args.strict,
        noisy_retries=args.noisy_retries,
        logs_dir=RESULTS_DIR / "logs" / f"auth-{stamp}",
        work_dir=work_dir,
    )
    return Run(
        settings=settings,
        configs=tuple(c for c in ALL_CONFIGS if c in chosen),
        redis_url=args.redis_url,
        redis_prefix=f"tiergate-bench:{secrets.token_hex(6)}:",
        admin_token=f"bench-admin-{secrets.token_hex(16)}",
    )


def gateway_config(config: str, port: int, sim_port: int, config_dir: Path, run: Run) -> dict[str, Any]:
    """overhead.py's tiergate config, with keys, a SQLite key store and, for keys-redis, Redis limits."""
    data = servers.tiergate_config(port, sim_port)
    if config == NO_AUTH:
        return data
    data["auth"] = {"mode": "keys", "admin_tokens": [run.admin_token]}
    data["database"] = {"url": f"sqlite:///{config_dir / 'keys.sqlite3'}"}
    if config == KEYS_REDIS:
        # closed: should Redis fail during a row, requests get 503 and the row is invalid, instead of
        # quietly running without limits (open), which would look cheaper than it is.
        data["redis"] = {"url": run.redis_url, "prefix": run.redis_prefix, "failure_mode": "closed"}
    return data


def create_key(run: Run, config_path: Path, cwd: Path, name: str, rpm: int, tpm: int) -> str:
    """Create a key of TENANT straight in the gateway's database; returns the full key."""
    return admin_cli.create_key(
        run.settings.tiergate_cmd, config_path, cwd, tenant=TENANT, name=name, tiers=TIER, limits=(rpm, tpm)
    )


def start_gateway(
    stack: contextlib.ExitStack, config: str, sim: ManagedProcess, run: Run, redis_pid: int | None
) -> Gateway:
    """Write the config, create the key, start the gateway (stopped with the stack), wait for /readyz."""
    settings = run.settings
    config_dir = settings.work_dir / config
    config_dir.mkdir()
    port, sim_port = procs.free_port(), int(sim.base_url.rsplit(":", 1)[1])
    config_path = servers.write_json(
        config_dir / "tiergate.yaml", gateway_config(config, port, sim_port, config_dir, run)
    )
    headers: dict[str, str] = {}
    probe_headers: dict[str, str] | None = None
    if config != NO_AUTH:
        cmd = run.settings.tiergate_cmd
        admin_cli.tiergate_cli(cmd, ["tenants", "create", TENANT, "--config", str(config_path)], config_dir)
        secret = create_key(run, config_path, config_dir, "bench", KEY_RPM, KEY_TPM)
        headers = {"Authorization": f"Bearer {secret}"}
    if config == KEYS_REDIS:
        probe = create_key(run, config_path, config_dir, "probe", PROBE_RPM, PROBE_TPM)
        probe_headers = {"Authorization": f"Bearer {probe}"}
    proc = stack.enter_context(
        procs.managed(
            config,
            servers.tiergate_argv(settings.tiergate_cmd, config_path),
            base_url=f"http://127.0.0.1:{port}",
            log_path=settings.logs_dir / f"tiergate-{config}.log",
            env=admin_cli.clean_env(),
            cwd=config_dir,
        )
    )
    proc.wait_ready(overhead.READY_PATHS[TIERGATE], overhead.READY_TIMEOUT_S[TIERGATE])
    script = config_dir / "chat.lua"
    wrk.write_script(
        script,
        chat.request_body(MODE),
        {"Content-Type": "application/json", **headers},
        chat.body_markers(MODE),
    )
    return Gateway(config, proc, headers, script, probe_headers, redis_pid if config == KEYS_REDIS else None)


def verify(gw: Gateway, run: Run) -> str | None:
    """None when the gateway serves the request and really enforces what its configuration says."""
    keyed = gw.config != NO_AUTH
    problem = chat.verify(
        gw.proc.base_url, gw.headers, MODE, required_headers=(RATE_LIMIT_HEADER,) if keyed else ()
    )
    if problem is None and keyed:
        problem = chat.refuses_anonymous(gw.proc.base_url)
    if problem is None and gw.probe_headers is not None:
        problem = _check_buckets_in_redis(gw, gw.probe_headers, run)
    if problem is not None and (died := gw.proc.exit_status()) is not None:
        problem = f"gateway is no longer running ({died})"
    return problem


def _check_buckets_in_redis(gw: Gateway, probe_headers: dict[str, str], run: Run) -> str | None:
    """One request with the probe key must leave its bucket under the run's prefix in Redis."""
    problem = chat.verify(gw.proc.base_url, probe_headers, MODE, required_headers=(RATE_LIMIT_HEADER,))
    if problem is not None:
        return f"probe key: {problem}"
    try:
        found = rediskeys.count(run.redis_url, run.redis_prefix)
    except redis.RedisError as exc:
        return f"Redis unreachable: {exc}"
    if found == 0:
        return f"no bucket under {run.redis_prefix!r} in Redis after a probe request: limits are not in Redis"
    return None


def measure(gw: Gateway, sim: ManagedProcess, concurrency: int, run: Run) -> AuthRow:
    """One wrk run with CPU deltas of the gateway, the simulator and (keys-redis) Redis, and peak RSS."""
    row = AuthRow(gw.config, MODE, concurrency)
    redis_pid = gw.redis_pid
    cpu_before = procs.cpu_seconds(gw.proc.pid)
    sim_before = procs.cpu_seconds(sim.pid)
    redis_before = procs.cpu_seconds(redis_pid) if redis_pid else 0.0
    busy_before = procs.system_busy_seconds()
    try:
        row.result = wrk.run(
            gw.proc.base_url + chat.CHAT_PATH,
            gw.script,
            connections=concurrency,
            threads=1,
            duration_s=run.settings.duration_s,
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        row.error = f"wrk failed: {exc}"
        return row
    if (died := gw.proc.exit_status()) is not None:
        row.error = f"{gw.config} gateway died during the run ({died})"
        return row
    busy = procs.system_busy_seconds() - busy_before
    server = procs.cpu_seconds(gw.proc.pid) - cpu_before
    sim_cpu = procs.cpu_seconds(sim.pid) - sim_before
    redis_cpu = procs.cpu_seconds(redis_pid) - redis_before if redis_pid else 0.0
    seconds = row.result.duration_s
    row.server_cpu_pct = 100 * server / seconds
    row.sim_cpu_pct = 100 * sim_cpu / seconds
    row.redis_cpu_pct = 100 * redis_cpu / seconds if redis_pid else None
    row.other_cpu_pct = max(0.0, 100 * (busy - server - sim_cpu - redis_cpu - row.result.wrk_cpu_s) / seconds)
    row.peak_rss_mb = procs.peak_rss_mb(gw.proc.pid)
    return row


def measure_quietly(gw: Gateway, sim: ManagedProcess, concurrency: int, run: Run) -> AuthRow:
    """Measure; while other processes ate a noticeable share of the CPUs, measure again (as overhead.py)."""
    best = latest = measure(gw, sim, concurrency, run)
    _print_progress(latest)
    for _ in range(run.settings.noisy_retries):
        if not best.noisy:
            break
        print(f"    other load {latest.other_cpu_pct or 0.0:.0f}% of a core during that row; measuring again")
        latest = measure(gw, sim, concurrency, run)
        _print_progress(latest)
        if latest.valid and (latest.other_cpu_pct or 0.0) < (best.other_cpu_pct or 0.0):
            best = latest
    return best


def _print_progress(row: AuthRow) -> None:
    r = row.result
    if r is None:
        print(f"  {row.config:10} c={row.concurrency:<3} ERROR {row.error}", flush=True)
        return
    state = "ok" if row.valid else f"INVALID ({row.problem()})"
    print(
        f"  {row.config:10} c={row.concurrency:<3} {r.rps:9.0f} req/s  "
        f"p50 {r.p50_ms:8.2f} ms  p99 {r.p99_ms:8.2f} ms  {state}",
        flush=True,
    )


def _delete_redis_keys(run: Run) -> None:
    try:
        deleted = rediskeys.delete(run.redis_url, run.redis_prefix)
    except redis.RedisError as exc:
        print(f"could not delete the Redis keys under {run.redis_prefix!r}: {exc}", file=sys.stderr)
        return
    print(f"deleted {deleted} Redis keys under {run.redis_prefix!r}", flush=True)


def prepare(
    stack: contextlib.ExitStack, sim: ManagedProcess, run: Run
) -> tuple[dict[str, Gateway], dict[str, str]]:
    """Start and verify every selected gateway; returns the ready ones and why the others are not."""
    ready: dict[str, Gateway] = {}
    failed: dict[str, str] = {}
    redis_pid: int | None = None
    if KEYS_REDIS in run.configs:
        try:
            _version, redis_pid = rediskeys.server(run.redis_url)
        except redis.RedisError as exc:
            failed[KEYS_REDIS] = f"Redis at {run.redis_url} unreachable: {exc}"
        else:
            # Registered before the gateway starts, so it runs after the gateway has stopped writing.
            stack.callback(_delete_redis_keys, run)
    for config in run.configs:
        if config in failed:
            print(f"{config}: {failed[config]}", flush=True)
            continue
        try:
            gw = start_gateway(stack, config, sim, run, redis_pid)
        except StartupError as exc:
            print(f"{config}: did not start: {exc}", flush=True)
            failed[config] = f"startup failed (log: {run.settings.logs_dir / f'tiergate-{config}.log'})"
            continue
        problem = verify(gw, run)
        if problem is not None:
            print(f"{config}: verification FAILED: {problem}", flush=True)
            failed[config] = f"verification failed: {problem}"
            continue
        print(f"{config}: ready and verified ({DESCRIPTIONS[config]})", flush=True)
        ready[config] = gw
    return ready, failed


def run_all(run: Run) -> list[AuthRow]:
    with contextlib.ExitStack() as stack:
        try:
            sim = overhead.start_simulator(stack, run.settings)
        except StartupError as exc:
            print(f"simulator did not start: {exc}", flush=True)
            return [AuthRow(c, MODE, n, error="simulator failed") for c in run.configs for n in CONCURRENCIES]
        ready, failed = prepare(stack, sim, run)
        for gw in ready.values():
            # Fills connection pools (to the engine and to Redis) and settles lazy initialisation.
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                url = gw.proc.base_url + chat.CHAT_PATH
                wrk.run(
                    url, gw.script, connections=HIGH_CONCURRENCY, threads=1, duration_s=run.settings.warmup_s
                )
        measured: dict[tuple[str, int], AuthRow] = {}
        # Interleaved: all configurations at c=1, then all at c=50, so a drift in the machine's speed
        # lands on the compared rows alike rather than on whichever configuration ran last.
        for concurrency in CONCURRENCIES:
            for config in run.configs:
                if config in ready:
                    measured[config, concurrency] = measure_quietly(ready[config], sim, concurrency, run)
                else:
                    measured[config, concurrency] = AuthRow(config, MODE, concurrency, error=failed[config])
    return [measured[c, n] for c in run.configs for n in CONCURRENCIES]


def find(rows: Sequence[AuthRow], config: str, concurrency: int) -> AuthRow | None:
    return next((r for r in rows if (r.config, r.concurrency) == (config, concurrency)), None)


def fill_relative(rows: Sequence[AuthRow]) -> None:
    """Added p50 and relative req/s against the no-auth row at the same concurrency (both valid)."""
    for row in rows:
        base = find(rows, NO_AUTH, row.concurrency)
        if row.config == NO_AUTH or base is None or not (base.valid and row.valid):
            continue
        if row.result is not None and base.result is not None:
            row.added_p50_ms = row.result.p50_ms - base.result.p50_ms
            row.rps_vs_baseline = row.result.rps / base.result.rps if base.result.rps > 0 else None


def evaluate(rows: Sequence[AuthRow], configs: Sequence[str]) -> list[Check]:
    name = f"keys + Redis limits add <= {MAX_REDIS_ADDED_P50_MS:g} ms to p50, c={LOW_CONCURRENCY}"
    if NO_AUTH not in configs or KEYS_REDIS not in configs:
        return [Check(name, None, f"{NO_AUTH} or {KEYS_REDIS} not selected")]
    row = find(rows, KEYS_REDIS, LOW_CONCURRENCY)
    if row is None or row.added_p50_ms is None:
        return [Check(name, False, "no valid measurement")]
    return [Check(name, row.added_p50_ms <= MAX_REDIS_ADDED_P50_MS, f"{row.added_p50_ms:.3f} ms")]


_HEADER = (
    "config",
    "conc",
    "req/s",
    "req/s vs no-auth",
    "p50 ms",
    "p99 ms",
    "+p50 ms",
    "peak RSS MB",
    "non-2xx",
    "sock err",
    "srv CPU%",
    "sim CPU%",
    "redis CPU%",
    "wrk CPU%",
    "other CPU%",
    "valid",
)


def _cells(row: AuthRow) -> list[str]:
    r = row.result
    return [
        row.config,
        str(row.concurrency),
        fmt(r.rps if r else None, ".0f"),
        "-" if row.rps_vs_baseline is None else f"{100 * row.rps_vs_baseline:.0f}%",
        fmt(r.p50_ms if r else None, ".2f"),
        fmt(r.p99_ms if r else None, ".2f"),
        fmt(row.added_p50_ms, "+.3f"),
        fmt(row.peak_rss_mb, ".1f"),
        str(r.non2xx) if r else "-",
        str(r.socket_errors) if r else "-",
        fmt(row.server_cpu_pct, ".0f"),
        fmt(row.sim_cpu_pct, ".0f"),
        fmt(row.redis_cpu_pct, ".0f"),
        fmt(row.wrk_cpu_pct, ".0f"),
        fmt(row.other_cpu_pct, ".0f"),
        "yes" if row.valid else "NO",
    ]


def summary_lines(rows: Sequence[AuthRow], checks: Sequence[Check]) -> list[str]:
    lines = [f"{c.verdict}  {c.name}: {c.detail}" for c in checks]
    for config in (KEYS_LOCAL, KEYS_REDIS):
        for concurrency in CONCURRENCIES:
            row = find(rows, config, concurrency)
            if row is not None and row.added_p50_ms is not None and row.rps_vs_baseline is not None:
                lines.append(
                    f"INFO  {config} vs {NO_AUTH}, c={concurrency}: {row.added_p50_ms:+.3f} ms p50, "
                    f"{100 * row.rps_vs_baseline:.0f}% of its req/s"
                )
    lines += [f"INVALID  {r.config} c={r.concurrency}: {r.problem()}" for r in rows if not r.valid]
    lines += [
        f"NOISY    {r.config} c={r.concurrency}: other processes used {r.other_cpu_pct:.0f}% of a core "
        "during the row; rerun on a quiet machine"
        for r in rows
        if r.noisy
    ]
    return lines


def text_table(rows: Sequence[AuthRow], checks: Sequence[Check]) -> str:
    table = [list(_HEADER), *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_HEADER))]
    out = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]
    return "\n".join([*out, "", *summary_lines(rows, checks)])


def markdown(rows: Sequence[AuthRow], checks: Sequence[Check], meta: dict[str, Any]) -> str:
    head = "| " + " | ".join(_HEADER) + " |"
    sep = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(_HEADER))) + "|"
    body = ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    meta_lines = [f"- {k}: {v}" for k, v in meta.items()]
    summary = [f"- {line}" for line in summary_lines(rows, checks)]
    return "\n".join([*meta_lines, "", head, sep, *body, "", *summary]) + "\n"


def to_json(rows: Sequence[AuthRow], checks: Sequence[Check], meta: dict[str, Any]) -> str:
    def row_dict(row: AuthRow) -> dict[str, Any]:
        data = asdict(row)
        data["config"] = data.pop("target")
        data["mode"] = row.mode.value
        data.update(valid=row.valid, rps=row.result.rps if row.result else None, noisy=row.noisy)
        data["wrk_cpu_pct"] = row.wrk_cpu_pct
        return data

    payload = {
        "meta": meta,
        "rows": [row_dict(r) for r in rows],
        "checks": [{**asdict(c), "verdict": c.verdict} for c in checks],
    }
    return json.dumps(payload, indent=2) + "\n"


def write_results(
    stamp: str, rows: Sequence[AuthRow], checks: Sequence[Check], meta: dict[str, Any]
) -> list[Path]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    paths = [RESULTS_DIR / f"auth-{stamp}.json", RESULTS_DIR / f"auth-{stamp}.md"]
    paths[0].write_text(to_json(rows, checks, meta))
    paths[1].write_text(markdown(rows, checks, meta))
    return paths


def collect_meta(run: Run) -> dict[str, Any]:
    meta = overhead.collect_meta(run.settings)
    meta["configs"] = "; ".join(f"{c} = {DESCRIPTIONS[c]}" for c in run.configs)
    if run.configs != (NO_AUTH,):
        meta["key"] = (
            f"tenant {TENANT}, tier {TIER}, rpm {KEY_RPM}, tpm {KEY_TPM}; auth.cache_ttl_s default (1 s)"
        )
    if KEYS_REDIS in run.configs:
        try:
            version, pid = rediskeys.server(run.redis_url)
        except redis.RedisError:
            version, pid = "unreachable", None
        cpu = "counted as redis CPU%" if pid else "not visible here, so counted in other CPU%"
        meta["redis"] = f"{version} at {run.redis_url}, prefix {run.redis_prefix}, failure_mode closed; {cpu}"
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not wrk.wrk_available():
        print("wrk not found on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    exit_on_signals()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="tiergate-bench-auth-") as tmp:
        run = make_run(args, Path(tmp), stamp)
        try:
            rows = run_all(run)
        except KeyboardInterrupt:
            print("\ninterrupted; servers stopped", file=sys.stderr)
            return 130
    return finish(rows, run, stamp)


def finish(rows: list[AuthRow], run: Run, stamp: str) -> int:
    fill_relative(rows)
    checks = evaluate(rows, run.configs)
    meta = collect_meta(run)
    print()
    print(text_table(rows, checks))
    for path in write_results(stamp, rows, checks, meta):
        print(f"wrote {path.relative_to(BENCH_DIR.parent)}")
    if not all(row.valid for row in rows):
        return 2
    if run.settings.strict and any(c.passed is False for c in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
