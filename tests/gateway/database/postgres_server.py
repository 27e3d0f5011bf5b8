"""A PostgreSQL server of a test's own (initdb + pg_ctl on a free port in a temporary directory), which the
test may crash, start again, or hang (SIGSTOP) - never the shared server on 5432, which others use.

Run as root, the server runs as the `postgres` user (initdb refuses root). Without PostgreSQL's binaries
the fixture skips, loudly; with TIERGATE_REQUIRE_POSTGRES set (CI) it fails instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.limits.redis_server import free_port

__all__ = ["PostgresServer", "postgres_bin", "postgres_template", "throwaway_postgres"]

REQUIRE_ENV = "TIERGATE_REQUIRE_POSTGRES"


def postgres_bin() -> Path | None:
    """The directory of initdb and pg_ctl: on the PATH, or Debian's newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


class PostgresServer:
    """Started by `start()`, crashed by `stop()` (pg_ctl's immediate mode), hung by `pause()`; its files
    are removed by `remove()`. Nothing is synced to disk: it is a throwaway. Made from `template`, the data
    directory of another (copied: initdb takes seconds, a copy milliseconds), or by initdb."""

    def __init__(self, bindir: Path, template: PostgresServer | None = None) -> None:
        self._bin = bindir
        self.port = free_port()
        self._root = Path(tempfile.mkdtemp(prefix="tiergate-pg-"))
        self._data = self._root / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")  # KeyError: no such user, and the caller skips
            os.chown(self._root, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        if template is None:
            self._run("initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres", "--no-sync")
        else:
            subprocess.run(["cp", "-a", str(template._data), str(self._data)], check=True, timeout=60)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self._root / "log")
        self._run("pg_ctl", "-D", str(self._data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """A crash: every connection cut, no clean shutdown."""
        self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")

    def pause(self) -> None:
        """A hang: the server and its backends stopped; the kernel still accepts connections."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, number: signal.Signals) -> None:
        for pid in self._pids():
            # a backend may end between the listing and the signal (its client closed): nothing to stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

    def remove(self) -> None:
        if (self._data / "postmaster.pid").exists():
            self.resume()
            self.stop()
        shutil.rmtree(self._root, ignore_errors=True)

    def _pids(self) -> list[int]:
        postmaster = int((self._data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [postmaster, *map(int, children)]

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self._bin / program), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[PostgresServer]:
    """An initialised data directory, never started, that each throwaway server is copied from."""
    bindir = postgres_bin()
    try:
        if bindir is None:
            raise FileNotFoundError("no initdb on the PATH or under /usr/lib/postgresql/*/bin")
        template = PostgresServer(bindir)
    except (OSError, KeyError, subprocess.SubprocessError) as exc:
        message = f"NO THROWAWAY POSTGRESQL, so this outage test is SKIPPED: {exc!r}"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    yield template
    template.remove()


@pytest.fixture
def throwaway_postgres(postgres_template: PostgresServer) -> Iterator[PostgresServer]:
    """A started PostgreSQL server of this test's own, removed afterwards."""
    server = PostgresServer(postgres_template._bin, postgres_template)
    try:
        server.start()
        yield server
    finally:
        server.remove()
