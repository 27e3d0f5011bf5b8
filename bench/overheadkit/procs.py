"""Start, watch and stop the server processes under test.

Every server runs in its own session (process group) so that stopping it also stops any worker
processes it forked, and so that a Ctrl-C in the terminal reaches only this script, which then
shuts the servers down in order instead of leaving half of them running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class StartupError(RuntimeError):
    """A server did not become ready; the message carries the tail of its log."""


def free_port() -> int:
    """Ask the kernel for a currently unused loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children_map() -> dict[int, list[int]]:
    """Map each pid to its direct children, from one scan of /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may itself contain spaces)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """The pid and all its live descendants (uvicorn/gunicorn workers, helper processes)."""
    children = _children_map()
    tree, stack = [], [pid]
    while stack:
        current = stack.pop()
        tree.append(current)
        stack.extend(children.get(current, []))
    return tree


def _vm_hwm_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def peak_rss_mb(pid: int) -> float:
    """Peak resident set (VmHWM) summed over the process tree, in MB (10^6 bytes).

    VmHWM is the kernel's own high-water mark, so a short spike between two samples is not missed.
    Summing over workers slightly overcounts pages shared after fork, which errs on the safe side.
    """
    return sum(_vm_hwm_kib(p) for p in process_tree(pid)) * 1024 / 1e6


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by the live process tree."""
    total = 0
    for p in process_tree(pid):
        fields = _stat_fields(p)
        if fields is not None:
            # utime and stime are fields 14 and 15 of stat(5); the list starts at field 3.
            total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def system_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine (all cores) since boot, from /proc/stat.

    Compared with the CPU of the processes under test it shows how much of a measurement window
    went to something else on the machine, which on a 2-core box skews the numbers.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


@dataclass
class ManagedProcess:
    """A started server: its Popen handle, where it logs, and its base URL."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    base_url: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_status(self) -> str | None:
        """None while running, else how it ended (a signal number hints at an outside kill)."""
        code = self.popen.poll()
        if code is None:
            return None
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, path: str, timeout_s: float) -> None:
        """Poll GET path until it answers 200; fail fast if the process dies meanwhile."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise StartupError(
                        f"{self.name} exited with code {self.popen.returncode} before becoming ready:\n"
                        f"{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(path).status_code == 200:
                        return
                time.sleep(0.1)
        raise StartupError(f"{self.name} not ready on {path} after {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever outlives the grace period."""
        members = process_tree(self.pid) if self.popen.poll() is None else []
        if members:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.popen.wait()
        # A worker can outlive its leader (orphaned, reparented away from it): kill the ones we saw,
        # by pid, and only while they still belong to our process group.
        for pid in members[1:]:
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == self.pid:
                    os.kill(pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextlib.contextmanager
def managed(
    name: str,
    argv: Sequence[str],
    *,
    base_url: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[ManagedProcess]:
    """Run argv as a server for the duration of the with-block, always stopping it afterwards."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    proc = ManagedProcess(name=name, popen=popen, log_path=log_path, base_url=base_url)
    try:
        yield proc
    finally:
        proc.stop()
