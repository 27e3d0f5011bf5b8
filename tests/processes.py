"""The `tiergate` command as real processes on real ports, for tests."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import httpx

from tests.conftest import unused_url

TIERGATE = [sys.executable, "-m", "gateway"]


def free_port() -> int:
    return int(unused_url().rsplit(":", 1)[1])


def wait_http(url: str, process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"{url} never answered 200; exit code {process.poll()}; output:\n{output}")
        time.sleep(0.1)


def start(processes: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*TIERGATE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    processes.append(process)
    return process


def read_until(process: subprocess.Popen[str], pattern: str, timeout: float = 20.0) -> re.Match[str]:
    """Read the process's output line by line until `pattern` matches."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            seen.append(line)
            if match := re.search(pattern, line):
                return match
    raise AssertionError(f"{pattern!r} never appeared in:\n{''.join(seen)}")


def run_on_terminal(args: list[str], timeout: float = 60) -> tuple[int, str]:
    """Runs a command with stdout and stderr on a pseudo-terminal; its exit code and all it wrote there."""
    controller, terminal = pty.openpty()
    env = {key: value for key, value in os.environ.items() if key not in ("NO_COLOR", "COLUMNS")}
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**env, "TERM": "xterm-256color"},
    )
    os.close(terminal)
    written = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every end of the terminal closed, the process is gone
                break
            if not chunk:
                break
            written += chunk
        return process.wait(timeout=10), written.decode(errors="replace")
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
