"""A Redis for tests: the local one on 6379 if it answers, else a throwaway redis-server, which a test may
also start itself, kill and start again.

The fixtures live here, not in conftest.py, so that any test directory can take them in with an import in
its own conftest.py: `from tests.gateway.limits.redis_server import redis_prefix, redis_url`.
Tests never touch data they did not create: each gets its own key prefix, deleted afterwards."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.processes import free_port

__all__ = ["REDIS_SERVER", "RedisServer", "free_port", "listening", "redis_prefix", "redis_url"]

REDIS_SERVER = shutil.which("redis-server")


def listening(port: int) -> bool:
    """Whether a Redis answers PING there (a bare TCP check would also accept something else)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """Nothing persisted: a restart comes back empty, as a crashed cache would."""

    def __init__(self, port: int | None = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed")
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self._process is None, "already running"
        assert REDIS_SERVER is not None
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5.0
        while not listening(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def pause(self) -> None:
        """A hang: the server stopped (SIGSTOP); the kernel still accepts connections and their commands,
        which the server runs once resumed."""
        assert self._process is not None, "not running"
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None, "not running"
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGCONT)  # a paused process would not die of SIGKILL at once
        self._process.kill()  # a crash, not a clean shutdown
        self._process.wait(timeout=5.0)
        self._process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if listening(6379):
        yield "redis://127.0.0.1:6379/0"
        return
    if REDIS_SERVER is None:
        pytest.skip("NO REDIS: nothing answers on 127.0.0.1:6379 and redis-server is not installed")
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; whatever was written under it is deleted afterwards."""
    prefix = f"tiergate-test:{uuid.uuid4().hex}:"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
