"""The command-line options every benchmark of this folder shares."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

from overheadkit.procs import StartupError

__all__ = ["add_run_options", "exit_on_signals", "run_servers"]

T = TypeVar("T")


def _raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    sys.exit(128 + signum)


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP become SystemExit, so every `finally` runs: servers stop, temporary state goes."""
    signal.signal(signal.SIGTERM, _raise_system_exit)
    signal.signal(signal.SIGHUP, _raise_system_exit)


def add_run_options(parser: argparse.ArgumentParser, *, warmup_help: str, strict_help: str) -> None:
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement (default 10)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s per measurement, 1 s warm-up")
    parser.add_argument("--warmup", type=float, default=None, help=warmup_help)
    parser.add_argument("--strict", action="store_true", help=strict_help)
    parser.add_argument(
        "--noisy-retries",
        type=int,
        default=2,
        help="re-measure a row up to N times while other processes load the CPUs (default 2)",
    )


def run_servers(work: Callable[[], T]) -> T | int:
    """What `work` returns, or the exit status when it could not finish: 130 interrupted, 2 when a server did
    not start or answer (each said on standard error; the servers are stopped either way)."""
    try:
        return work()
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except StartupError as exc:
        print(f"a server did not start or answer: {exc}", file=sys.stderr)
        return 2
