"""`tiergate probe`: quality probes on demand against a running gateway, results as a table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from gateway.probes.tasks import ProbeResult, ProbeRetries, builtin_tasks, load_tasks, run_probe
from gateway.settings import api_key_from_environment

__all__ = ["Progress", "add_probe_command", "run_probe_command"]


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


def run_probe_command(args: argparse.Namespace) -> None:
    if args.max_retries < 0 or not args.max_retry_wait >= 0 or args.concurrency < 1:
        sys.exit("tiergate probe: --max-retries and --max-retry-wait must be >= 0, --concurrency >= 1")
    show = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        results = asyncio.run(_probe(args, Progress(sys.stderr) if show else None))
    except (httpx.HTTPError, ValueError) as exc:
        sys.exit(f"tiergate probe: {exc}")
    if args.json:
        print(orjson.dumps([r.to_dict() for r in results], option=orjson.OPT_INDENT_2).decode())
    else:
        print(table(results))


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


async def _probe(args: argparse.Namespace, progress: Progress | None) -> list[ProbeResult]:
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


def table(results: list[ProbeResult]) -> str:
    rows = [
        f"{'model':<16}{'tier':<12}{'effort':<8}{'answered':>9}{'refused':>9}{'errored':>9}{'accuracy':>9}"
        f"{'reasoning':>11}{'cost':>12}{'per right':>12}"
    ]
    for r in results:
        per_right = r.cost_per_correct_micros
        accuracy = f"{r.accuracy:.1%}" if r.accuracy is not None else "-"
        rows.append(
            f"{r.model:<16}{r.tier:<12}{r.effort or '-':<8}{r.answered:>9}{r.refused:>9}{r.errored:>9}"
            f"{accuracy:>9}{r.mean_reasoning_tokens:>11.0f}{r.cost_micros / 1e6:>12.6f}"
            f"{per_right / 1e6 if per_right is not None else float('nan'):>12.6f}"
        )
    return "\n".join(rows)
