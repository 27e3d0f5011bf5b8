"""The tracing comparison of bench/overhead.py (--tracing): the variants measured, the local OTLP sink they
export to, and the table of medians, each variant beside tracing off."""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from overheadkit import procs
from overheadkit.chat import Mode
from overheadkit.procs import ManagedProcess
from overheadkit.report import HIGH_CONCURRENCY, LOW_CONCURRENCY, TIERGATE, Row, fmt

SINK = Path(__file__).resolve().parent / "otlp_sink.py"
TRACED, SAMPLED = "traced", "traced-10%"


def variants(endpoint: str) -> list[tuple[str, dict[str, Any] | None]]:
    """Each tiergate measured, with its `tracing` settings: off; every request traced and exported; one
    trace in ten recorded (the others' spans are not recorded, their context still sent to the engine)."""
    return [
        (TIERGATE, None),
        (TRACED, {"enabled": True, "endpoint": endpoint, "sample_ratio": 1.0}),
        (SAMPLED, {"enabled": True, "endpoint": endpoint, "sample_ratio": 0.1}),
    ]


def start_sink(stack: contextlib.ExitStack, logs_dir: Path, work_dir: Path) -> ManagedProcess:
    """The OTLP/HTTP sink, a process of its own (its CPU is not the gateway's)."""
    port = procs.free_port()
    sink = stack.enter_context(
        procs.managed(
            "otlp-sink",
            [sys.executable, str(SINK), str(port)],
            base_url=f"http://127.0.0.1:{port}",
            log_path=logs_dir / "otlp-sink.log",
            cwd=work_dir,
        )
    )
    sink.wait_ready("/health", 30.0)
    return sink


def received(sink: ManagedProcess) -> str:
    stats = json.loads(httpx.get(sink.base_url + "/stats", timeout=10).text)
    return f"the OTLP sink received {stats['posts']} exports, {stats['bytes']:,} bytes"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _change(base: float | None, value: float | None) -> str:
    return "-" if base is None or value is None or base == 0 else f"{100 * (value - base) / base:+.1f}%"


def _figures(rows: Sequence[Row], name: str, mode: Mode, concurrency: int) -> list[float | None]:
    """Median req/s, p50, p99 (ms) and server CPU per request (us) of one variant's valid rows."""
    chosen = [r for r in rows if (r.target, r.mode, r.concurrency) == (name, mode, concurrency) and r.valid]
    results = [r.result for r in chosen if r.result is not None]
    cpu = [
        1e6 * (r.server_cpu_pct or 0.0) / 100 / r.result.rps
        for r in chosen
        if r.result is not None and r.result.rps > 0
    ]
    return [
        _median([x.rps for x in results]),
        _median([x.p50_ms for x in results]),
        _median([x.p99_ms for x in results]),
        _median(cpu),
    ]


def table(rows: Sequence[Row], names: Sequence[str]) -> str:
    """Medians over the rounds, each variant with its change from the first (tracing off). CPU per request
    is the gateway process's CPU time over the requests it served: the least noisy figure on a shared box."""
    head = f"{'variant':11} {'mode':10} {'c':>3} {'req/s':>7} {'chg':>7} {'p50 ms':>7} {'p99 ms':>7}"
    lines = [head + f" {'CPU us/req':>10} {'chg':>7}"]
    for mode in Mode:
        for concurrency in (LOW_CONCURRENCY, HIGH_CONCURRENCY):
            base = _figures(rows, names[0], mode, concurrency)
            for name in names:
                rps, p50, p99, cpu = _figures(rows, name, mode, concurrency)
                lines.append(
                    f"{name:11} {mode.value:10} {concurrency:3} {fmt(rps, '7.0f')}"
                    f" {_change(base[0], rps) if name != names[0] else '':>7}"
                    f" {fmt(p50, '7.2f')} {fmt(p99, '7.2f')} {fmt(cpu, '10.0f')}"
                    f" {_change(base[3], cpu) if name != names[0] else '':>7}"
                )
    return "\n".join(lines)
