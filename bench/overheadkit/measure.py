"""One wrk measurement of a target: the run's settings, the target (a server, and the upstream it consumes
when it is a proxy) and the row it yields, with the CPU of each process during it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from overheadkit import chat, procs, wrk
from overheadkit.chat import Mode
from overheadkit.procs import ManagedProcess
from overheadkit.report import RESPONSES, Row

__all__ = ["Settings", "Target", "measure"]


@dataclass(frozen=True)
class Settings:
    duration_s: float
    warmup_s: float
    targets: tuple[str, ...]
    tiergate_cmd: list[str]
    strict: bool
    noisy_retries: int
    logs_dir: Path
    work_dir: Path


@dataclass(frozen=True)
class Target:
    """A running server to measure, and the simulator whose CPU it consumes when it is a proxy."""

    name: str
    proc: ManagedProcess
    headers: dict[str, str]
    sim: ManagedProcess | None

    @property
    def responses(self) -> bool:
        return self.name == RESPONSES


def measure(target: Target, mode: Mode, concurrency: int, script: Path, settings: Settings) -> Row:
    """One wrk run, with CPU deltas of the server (and simulator) and the peak RSS right after."""
    row = Row(target.name, mode, concurrency)
    cpu_before = procs.cpu_seconds(target.proc.pid)
    sim_before = procs.cpu_seconds(target.sim.pid) if target.sim else 0.0
    busy_before = procs.system_busy_seconds()
    try:
        row.result = wrk.run(
            target.proc.base_url + chat.path(target.responses),
            script,
            connections=concurrency,
            threads=1,
            duration_s=settings.duration_s,
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        row.error = f"wrk failed: {exc}"
        return row
    if (died := target.proc.exit_status()) is not None:
        row.error = f"{target.name} died during the run ({died})"
        return row
    busy = procs.system_busy_seconds() - busy_before
    server = procs.cpu_seconds(target.proc.pid) - cpu_before
    sim = procs.cpu_seconds(target.sim.pid) - sim_before if target.sim else 0.0
    seconds = row.result.duration_s
    row.server_cpu_pct = 100 * server / seconds
    row.sim_cpu_pct = 100 * sim / seconds if target.sim else None
    row.other_cpu_pct = max(0.0, 100 * (busy - server - sim - row.result.wrk_cpu_s) / seconds)
    row.peak_rss_mb = procs.peak_rss_mb(target.proc.pid)
    return row
