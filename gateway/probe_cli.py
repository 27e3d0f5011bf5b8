"""`tiergate probe`: quality probes on demand against a running gateway, results as a table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.probes import ProbeResult, builtin_tasks, load_tasks, run_probe
from gateway.settings import api_key_from_environment

__all__ = ["add_probe_command", "run_probe_command"]


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
    probe.add_argument("--json", action="store_true", help="print JSON")


def run_probe_command(args: argparse.Namespace) -> None:
    try:
        results = asyncio.run(_probe(args))
    except (httpx.HTTPError, ValueError) as exc:
        sys.exit(f"tiergate probe: {exc}")
    if args.json:
        print(orjson.dumps([r.to_dict() for r in results], option=orjson.OPT_INDENT_2).decode())
    else:
        print(table(results))


async def _probe(args: argparse.Namespace) -> list[ProbeResult]:
    tasks = load_tasks(args.tasks) if args.tasks else builtin_tasks(args.count, args.seed, args.difficulty)
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
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
            await run_probe(client, model, tier, tasks, effort=args.effort, concurrency=args.concurrency)
            for model, tier in targets
        ]


def table(results: list[ProbeResult]) -> str:
    rows = [
        f"{'model':<16}{'tier':<12}{'effort':<8}{'accuracy':>9}{'reasoning':>11}{'cost':>12}{'per right':>12}"
    ]
    for r in results:
        per_right = r.cost_per_correct_micros
        rows.append(
            f"{r.model:<16}{r.tier:<12}{r.effort or '-':<8}{r.accuracy:>9.1%}{r.mean_reasoning_tokens:>11.0f}"
            f"{r.cost_micros / 1e6:>12.6f}{per_right / 1e6 if per_right is not None else float('nan'):>12.6f}"
        )
    return "\n".join(rows)
