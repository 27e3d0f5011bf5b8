"""bench/overhead.py --hot-path: its options, and the run from options to table and files."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from overheadkit import hotpath, hotpath_report, servers
from overheadkit.cli import run_servers
from overheadkit.gateways import CONFIGS, Setup, builds
from overheadkit.upstream import raise_open_file_limit

__all__ = ["add_options", "main"]

BENCH_DIR = Path(__file__).resolve().parents[1]
RESULTS_DIR = BENCH_DIR / "results"
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES = "postgresql://127.0.0.1:5432/test"


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--hot-path (issue 18)")
    group.add_argument("--hot-path", action="store_true", help="the hot path's price, side by side")
    group.add_argument(
        "--baseline-cmd",
        default=None,
        help="another tiergate CLI, measured in the same run (its columns: base)",
    )
    group.add_argument("--configs", default=",".join(CONFIGS), help="subset of: " + ", ".join(CONFIGS))
    group.add_argument(
        "--parts", default=",".join(hotpath.PARTS), help="subset of: " + ", ".join(hotpath.PARTS)
    )
    group.add_argument(
        "--litellm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure LiteLLM (default: unless --quick)",
    )
    group.add_argument("--long-tokens", type=int, default=1000, help="chunks of a long stream (1000)")
    group.add_argument("--waves", default="500,1000", help="concurrent streams per wave (500,1000)")
    group.add_argument("--wave-tokens", type=int, default=200, help="chunks of a wave's streams (200)")
    group.add_argument(
        "--wave-itl-ms", type=float, default=25.0, help="ms between a wave stream's chunks (25)"
    )
    group.add_argument(
        "--door",
        choices=("fixed", "adaptive"),
        default="fixed",
        help="server.concurrency of the gateways (fixed: a closed-loop load at c=50 is the bench's own, "
        "not an overload the adaptive door should shed; adaptive: the default's behaviour)",
    )
    group.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=1024,
        help="server.max_concurrent_requests of the gateways (1024: room for a wave of 1,000 streams)",
    )
    group.add_argument("--redis-url", default=DEFAULT_REDIS, help=f"shared: Redis ({DEFAULT_REDIS})")
    group.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES, help=f"shared: PostgreSQL ({DEFAULT_POSTGRES})"
    )


def _subset(parser_name: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    chosen = [x for x in text.split(",") if x]
    unknown = set(chosen) - set(allowed)
    if unknown:
        raise SystemExit(f"{parser_name}: unknown {', '.join(sorted(unknown))}")
    return tuple(x for x in allowed if x in chosen)


def make_plan(args: argparse.Namespace, work_dir: Path, stamp: str) -> hotpath.Plan:
    litellm = args.litellm if args.litellm is not None else not args.quick
    baseline = shlex.split(args.baseline_cmd) if args.baseline_cmd else None
    return hotpath.Plan(
        duration_s=args.duration if args.duration is not None else (2.0 if args.quick else 5.0),
        warmup_s=args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0),
        rounds=args.rounds or (3 if args.quick else 5),
        parts=_subset("--parts", args.parts, hotpath.PARTS),
        configs=_subset("--configs", args.configs, CONFIGS),
        builds=tuple(builds(servers.tiergate_base_command(args.tiergate_cmd), baseline)),
        litellm_venv=LITELLM_VENV if litellm else None,
        long_tokens=args.long_tokens,
        waves=tuple(int(x) for x in args.waves.split(",") if x),
        wave_tokens=args.wave_tokens,
        wave_itl_ms=args.wave_itl_ms,
        setup=Setup(args.redis_url, args.postgres_url, args.door, args.max_concurrent_requests),
        logs_dir=RESULTS_DIR / "logs" / f"hotpath-{stamp}",
        work_dir=work_dir,
    )


def _commit_of(cmd: list[str]) -> str:
    """The git commit of the tree a tiergate CLI runs from (its venv's parent), when it is a checkout."""
    tree = Path(cmd[0]).resolve().parents[2] if cmd and cmd[0].endswith("/bin/tiergate") else BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(tree), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "--", "gateway", "engines", "pricing"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{tree} (not a git checkout)"
    return f"{tree} at {head[:70]}{' + uncommitted changes' if dirty else ''}"


def collect_meta(plan: hotpath.Plan) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": f"{platform.node()} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at the end)",
        "python": platform.python_version(),
    }
    for build in plan.builds:
        meta[f"tiergate{' (' + build.label + ')' if build.label else ''}"] = (
            f"{' '.join(build.cmd)}: {_commit_of(build.cmd)}"
        )
    meta["upstream"] = "overheadkit/upstream.py (raw asyncio + uvloop, vLLM chunk shapes, own process)"
    meta["wrk"] = (
        f"-t1, {plan.duration_s:g} s a row, {plan.warmup_s:g} s warm-up; "
        f"{plan.rounds} interleaved rounds, medians"
    )
    meta["bodies"] = (
        f"16 tokens (JSON, short stream), {plan.long_tokens} (long stream), include_usage on streams"
    )
    meta["waves"] = (
        f"{', '.join(str(w) for w in plan.waves)} streams opened at once, {plan.wave_tokens} chunks each, "
        f"one every {plan.wave_itl_ms:g} ms (overheadkit/streamwave.py)"
    )
    meta["configs"] = (
        "minimal: one key, no limits, no prices, no request log line; production: keys in SQLite, rpm/tpm "
        "limits, a daily tenant budget, price book, ledger (journal fsync on), request log line; shared: "
        "production with limits and budgets in Redis, keys and ledger in PostgreSQL"
    )
    meta["door"] = (
        f"server.concurrency {plan.setup.concurrency}, max_concurrent_requests {plan.setup.max_concurrent}"
    )
    if plan.litellm_venv is not None:
        meta["litellm"] = servers.litellm_version(plan.litellm_venv)
    return meta


def main(args: argparse.Namespace, stamp: str) -> int:
    raise_open_file_limit()  # wrk and every server inherit it
    with tempfile.TemporaryDirectory(prefix="tiergate-bench-hotpath-") as tmp:
        plan = make_plan(args, Path(tmp), stamp)
        venv, install_log = plan.litellm_venv, plan.logs_dir / "litellm-install.log"
        if venv is not None and not servers.litellm_installed(venv, install_log):
            return 2
        results = run_servers(lambda: hotpath.run(plan))
        if isinstance(results, int):
            return results
    meta = collect_meta(plan)
    text, found = hotpath_report.markdown(plan, results, meta)
    print()
    print(text)
    for path in hotpath_report.write(RESULTS_DIR, stamp, text, found, results, meta):
        with contextlib.suppress(ValueError):
            path = path.relative_to(BENCH_DIR.parent)
        print(f"wrote {path}")
    invalid = results.failed or any(not r.valid for rows in results.rows.values() for r in rows)
    if invalid:
        return 2
    return 1 if args.strict and any(c.passed is False for c in found) else 0
