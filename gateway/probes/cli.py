"""`tiergate probe`: quality probes on demand against a running gateway, results as a table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import httpx
from rich.progress import TaskID

from gateway.probes.calibrate_cli import add_calibrate_options, run_calibrate_command
from gateway.probes.tasks import ProbeResult, ProbeRetries, builtin_tasks, load_tasks, run_probe
from gateway.settings import api_key_from_environment
from gateway.terminal import Column, ProgressBars, print_json, print_table, progress_bars, render_table
from pricing import format_micros

__all__ = ["COLUMNS", "Progress", "add_probe_command", "run_probe_command", "table"]


def add_probe_command(commands: Any) -> None:
    probe = commands.add_parser(
        "probe", help="send verifiable tasks through a gateway: accuracy, depth and cost per tier and model"
    )
    probe.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway")
    probe.add_argument("--api-key", default=api_key_from_environment(), help="($TIERGATE_API_KEY)")
    probe.add_argument("--tier", action="append", choices=["fast", "deliberate"], help="default: both")
    probe.add_argument("--model", action="append", help="default: every model the gateway lists")
    probe.add_argument("--effort", help="reasoning_effort of every request")
    probe.add_argument("--count", type=int, default=20, help="built-in arithmetic tasks")
    probe.add_argument("--difficulty", type=int, default=3, help="operations per task, 1-4")
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--tasks", type=Path, help='your own set: JSONL of {"question", "answer"}')
    probe.add_argument("--concurrency", type=int, default=4)
    defaults = ProbeRetries()
    probe.add_argument(
        "--max-retries",
        type=int,
        default=defaults.max_retries,
        help="retries of a task answered 429 or 503, each after the wait the answer asks for",
    )
    probe.add_argument(
        "--max-retry-wait",
        type=float,
        default=defaults.max_wait_s,
        metavar="SECONDS",
        help="the most one task waits for its retries, in all; a longer retry-after is not waited for",
    )
    probe.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="progress on stderr (default: when stderr is a terminal)",
    )
    probe.add_argument("--json", action="store_true", help="print JSON")
    add_calibrate_options(probe)


def run_probe_command(args: argparse.Namespace) -> None:
    if args.max_retries < 0 or not args.max_retry_wait >= 0 or args.concurrency < 1:
        sys.exit("tiergate probe: --max-retries and --max-retry-wait must be >= 0, --concurrency >= 1")
    if args.calibrate:
        run_calibrate_command(args)
        return
    show = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        # a bar per model and tier on a terminal; `--progress` elsewhere writes lines a log can keep
        with progress_bars(show=show and sys.stderr.isatty()) as bars:
            lines = Progress(sys.stderr) if show and not bars.shown else None
            results = asyncio.run(_probe(args, _BarProgress(bars) if bars.shown else lines))
    except (httpx.HTTPError, ValueError) as exc:
        sys.exit(f"tiergate probe: {exc}")
    if args.json:
        print_json([r.to_dict() for r in results])
    else:
        print_table(COLUMNS, (_row(r) for r in results))


class Progress:
    """A run's progress on `stream` (stderr, never stdout: `--json` output stays pure). On a terminal one
    line, rewritten as tasks end; elsewhere a line at each tenth of a run, so a log is not flooded."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._terminal = stream.isatty()
        self._shown: tuple[str, int] | None = None  # (target, tenth) last written, off a terminal

    def __call__(self, result: ProbeResult) -> None:
        target = f"{result.model}:{result.tier}"
        line = (
            f"{target} {result.done}/{result.tasks} answered {result.answered} refused {result.refused}"
            f" errored {result.errored} retries {result.retries}"
        )
        finished = result.done == result.tasks
        if self._terminal:
            self._stream.write(f"\r{line}\x1b[K" + ("\n" if finished else ""))
        else:
            tenth = result.done * 10 // max(result.tasks, 1)
            if self._shown == (target, tenth):
                return
            self._shown = (target, tenth)
            self._stream.write(line + "\n")
        self._stream.flush()


class _BarProgress:
    """A probe's progress as bars: one per model and tier, its counts in the description."""

    def __init__(self, bars: ProgressBars) -> None:
        self._bars = bars
        self._tasks: dict[str, TaskID | None] = {}

    def __call__(self, result: ProbeResult) -> None:
        target = f"{result.model}:{result.tier}"
        if target not in self._tasks:
            self._tasks[target] = self._bars.add(target, result.tasks)
        counts = f"answered {result.answered} refused {result.refused} errored {result.errored}"
        self._bars.update(self._tasks[target], completed=result.done, description=f"{target} {counts}")


async def _probe(
    args: argparse.Namespace, progress: Callable[[ProbeResult], None] | None
) -> list[ProbeResult]:
    tasks = load_tasks(args.tasks) if args.tasks else builtin_tasks(args.count, args.seed, args.difficulty)
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    retries = ProbeRetries(args.max_retries, args.max_retry_wait)
    async with httpx.AsyncClient(base_url=args.url.rstrip("/"), headers=headers, timeout=600) as client:
        listed = await client.get("/v1/models")
        if listed.status_code != 200:
            raise ValueError(f"GET /v1/models: HTTP {listed.status_code}: {listed.text[:200]}")
        offered = {(card["root"], card["tier"]) for card in listed.json()["data"]}
        tiers = args.tier or ["fast", "deliberate"]
        models = args.model or sorted({model for model, _ in offered})
        targets = [(model, tier) for model in models for tier in tiers if (model, tier) in offered]
        if not targets:
            raise ValueError(f"the gateway offers none of {models} in {tiers}")
        return [
            await run_probe(
                client,
                model,
                tier,
                tasks,
                effort=args.effort,
                concurrency=args.concurrency,
                retries=retries,
                on_progress=progress,
            )
            for model, tier in targets
        ]


COLUMNS = (
    "model",
    "tier",
    "effort",
    Column("answered", numeric=True),
    Column("refused", numeric=True),
    Column("errored", numeric=True),
    Column("accuracy", numeric=True),
    Column("reasoning", numeric=True),
    Column("cost", numeric=True),
    Column("per right", numeric=True),
)


def _row(r: ProbeResult) -> list[Any]:
    per_right = r.cost_per_correct_micros
    return [
        r.model,
        r.tier,
        r.effort,
        r.answered,
        r.refused,
        r.errored,
        f"{r.accuracy:.1%}" if r.accuracy is not None else None,
        f"{r.mean_reasoning_tokens:.0f}",
        format_micros(r.cost_micros),  # money from its micros, never through a float
        format_micros(per_right) if per_right is not None else None,
    ]


def table(results: list[ProbeResult]) -> str:
    """The results as the plain table (for reports that keep it as text)."""
    return render_table(COLUMNS, (_row(r) for r in results), terminal=False).rstrip("\n")
