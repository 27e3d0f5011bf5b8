"""`kill -9` of a gateway under load loses no record of a completed request and creates no duplicate.

Real `tiergate serve` processes, one after another on one config: each is killed with SIGKILL at a random
(seeded) moment while client threads keep it busy, and the next one adopts the dead one's journal and drains
it into the ledger. The ledger must then hold every request whose response completed (a body read to its end,
or a stream whose `[DONE]` arrived) exactly once, with the cost its client was told; besides those, only
rows of requests cut short by a kill, never anything else.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from engines.simulator import create_simulator_app, profile
from gateway.database import open_database
from pricing import LedgerRow
from pricing.ledger import Ledger
from tests.chat import user
from tests.conftest import PRICE_BOOK
from tests.processes import TIERGATE, free_port, wait_http
from tests.servers import serving

SEED = 90210
KILLS = 2  # gateways killed under load, each adopted by the next
THREADS = 8
GATEWAY_ID = "x-tiergate-request-id"
WIDE = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
MESSAGES = user("Write down every sale.")

# quick but not instant, so that a kill always finds requests in flight; a few fail before any token
ENGINE = profile(
    "fast",
    seed=SEED,
    models=("qwen3-8b", "llama-3.1-8b", "qwen3-32b"),
    ttft_base_s=0.003,
    itl_s=0.003,
    output_tokens_range=(8, 40),
    error_rate=0.05,
)
MODELS = ("qwen3-8b", "qwen3-8b:deliberate", "llama-3.1-8b", "qwen3-32b")


@dataclass(frozen=True)
class Attempt:
    """One request as its client saw it."""

    gateway_id: str | None  # None: no response headers arrived
    completed: bool  # the response arrived in full
    connected: bool  # False: the connection was refused, so the request never reached a gateway
    status: int | None
    cost: int | None  # usage.cost_micros the client was told
    told: bool = False  # the client asked to be told the cost (a non-streamed body always tells it)


def config(tmp_path: Path, port: int, engine: str) -> Path:
    pool = {"replicas": [engine], "health": {"interval_s": 0.2}, "breaker": {"eject_after_failures": 10_000}}
    fast, deliberate = {"fast": {"pool": "sim"}}, {"deliberate": {"pool": "sim"}}
    data = {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "auth": {"mode": "disabled"},
        "pools": {"sim": pool},
        # every model of the price book, all in the one pool
        "models": {
            "qwen3-8b": {"default_tier": "fast", "tiers": {**fast, **deliberate}},
            "llama-3.1-8b": {"tiers": fast},
            "qwen3-32b": {"tiers": deliberate},
        },
        "pricing": {"book": str(PRICE_BOOK)},
        "database": {"url": database_url(tmp_path)},
        "ledger": {"journal_dir": str(journal_root(tmp_path))},
    }
    path = tmp_path / "tiergate.yaml"
    path.write_text(json.dumps(data, indent=2))  # JSON is YAML
    return path


def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


def journal_root(tmp_path: Path) -> Path:
    return tmp_path / "journal"


def start_gateway(
    processes: list[subprocess.Popen[str]], config_path: Path, log: Path, url: str
) -> subprocess.Popen[str]:
    """`tiergate serve`, its output in a file (a pipe nobody reads could fill up and stall it)."""
    with log.open("w") as output:
        process = subprocess.Popen(
            [*TIERGATE, "serve", "--config", str(config_path)],
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    processes.append(process)
    try:
        wait_http(url + "/readyz", process)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log.read_text()}") from None
    return process


def send(client: httpx.Client, url: str, rng: random.Random) -> Attempt:
    model = rng.choice(MODELS)
    body: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": rng.randint(8, 40)}
    streamed = rng.random() < 0.6
    usage = streamed and rng.random() < 0.7
    if streamed:
        body["stream"] = True
        if usage:
            body["stream_options"] = {"include_usage": True}
    gateway_id: str | None = None
    status: int | None = None
    try:
        if not streamed:
            response = client.post(url + "/v1/chat/completions", json=body)  # reads the whole body
            reply = response.json()
            cost = reply["usage"]["cost_micros"] if response.status_code == 200 else None
            return Attempt(response.headers[GATEWAY_ID], True, True, response.status_code, cost, True)
        with client.stream("POST", url + "/v1/chat/completions", json=body) as stream:
            gateway_id, status = stream.headers[GATEWAY_ID], stream.status_code
            if status != 200:
                stream.read()
                return Attempt(gateway_id, True, True, status, None)
            cost = None
            for line in stream.iter_lines():
                if line == "data: [DONE]":
                    return Attempt(gateway_id, True, True, status, cost, usage)
                if line.startswith("data: {"):
                    chunk = orjson.loads(line[6:])
                    if chunk.get("usage") is not None and not chunk.get("choices"):
                        cost = chunk["usage"]["cost_micros"]
            return Attempt(gateway_id, False, True, status, None)  # ended without [DONE]: an error event
    except httpx.ConnectError:
        return Attempt(None, False, False, None, None)
    except httpx.TransportError:  # the gateway died under it
        return Attempt(gateway_id, False, True, status, None)


@dataclass
class Load:
    """Client threads sending requests to one gateway until told to stop."""

    url: str
    seed: int
    attempts: list[Attempt]

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(self.seed * 1000 + index,)) for index in range(THREADS)
        ]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                attempt = send(client, self.url, rng)
                with self._lock:
                    self.attempts.append(attempt)
                if not attempt.connected:
                    time.sleep(0.01)  # nobody listens any more: wait to be stopped

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self._threads)


async def ledger_rows(url: str) -> list[LedgerRow]:
    database = await open_database(url)
    try:
        return [row async for row in Ledger(database).rows(None, *WIDE)]
    finally:
        await database.aclose()


async def settled_rows(url: str, expected: set[str], patience_s: float = 15.0) -> list[LedgerRow]:
    """The ledger's rows once it has stopped growing (and holds `expected`, unless that never happens)."""
    database = await open_database(url)
    try:
        ledger = Ledger(database)
        deadline = time.monotonic() + patience_s
        previous: set[str] = set()
        stable_since = time.monotonic()
        while True:
            rows = [row async for row in ledger.rows(None, *WIDE)]
            ids = {row.record.request_id for row in rows}
            now = time.monotonic()
            if ids != previous:
                previous, stable_since = ids, now
            elif now - stable_since >= (0.6 if expected <= ids else 2.0):
                return rows
            if now > deadline:
                return rows
            await asyncio.sleep(0.1)
    finally:
        await database.aclose()


@pytest.fixture
def engine() -> Iterator[str]:
    with serving(create_simulator_app(ENGINE)) as url:
        yield url


def test_kill_9_under_load_loses_no_completed_request_and_duplicates_none(
    processes: list[subprocess.Popen[str]], tmp_path: Path, engine: str
) -> None:
    rng = random.Random(SEED)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config_path = config(tmp_path, port, engine)
    attempts: list[Attempt] = []
    logs = [tmp_path / f"gateway-{index}.log" for index in range(KILLS + 1)]
    for index in range(KILLS):
        gateway = start_gateway(processes, config_path, logs[index], url)
        with Load(url, SEED + index, attempts):
            time.sleep(rng.uniform(0.5, 1.5))
            gateway.send_signal(signal.SIGKILL)
            assert gateway.wait(timeout=10) == -signal.SIGKILL
    killed = list(attempts)

    # the next one adopts what the killed ones left in their journals, before it serves anything
    survivor = start_gateway(processes, config_path, logs[-1], url)
    completed = {attempt.gateway_id for attempt in killed if attempt.completed and attempt.gateway_id}
    adopted = {row.record.request_id for row in asyncio.run(settled_rows(database_url(tmp_path), completed))}
    lost = completed - adopted
    assert not lost, f"{len(lost)} completed requests lost: {sorted(lost)[:5]}"

    # then it is stopped the ordinary way, under load: what it served is drained on its way out
    graceful: list[Attempt] = []
    with Load(url, SEED + KILLS, graceful):
        time.sleep(rng.uniform(0.3, 0.6))
        survivor.send_signal(signal.SIGINT)
        assert survivor.wait(timeout=30) == 0
    assert all(attempt.completed for attempt in graceful if attempt.gateway_id is not None), (
        "a graceful stop cut a response short"
    )
    attempts += graceful
    final = asyncio.run(ledger_rows(database_url(tmp_path)))

    # the load really was cut mid-flight by the kills, with plenty done before them and some by the last one
    done = [attempt for attempt in attempts if attempt.completed]
    cut = [attempt for attempt in killed if attempt.connected and not attempt.completed]
    served_last = sum(attempt.completed for attempt in graceful)
    assert len(done) >= 40 and len(cut) >= KILLS and served_last >= 5, (len(done), len(cut), served_last)

    row_ids = [row.record.request_id for row in final]
    assert len(row_ids) == len(set(row_ids)), "a request id is in the ledger twice"
    by_id = {row.record.request_id: row for row in final}
    ids = [attempt.gateway_id for attempt in attempts if attempt.gateway_id is not None]
    assert len(ids) == len(set(ids)), "the gateway gave two requests one id"
    assert adopted <= set(row_ids)

    # every completed request is in the ledger, once, as its client saw it
    missing = [attempt.gateway_id for attempt in done if attempt.gateway_id not in by_id]
    assert not missing, f"{len(missing)} completed requests lost: {missing[:5]}"
    for attempt in done:
        assert attempt.gateway_id is not None
        row = by_id[attempt.gateway_id]
        if attempt.status == 200:
            assert row.record.outcome == "ok" and not row.record.estimated, attempt
        else:  # the engine failed before any token: a row that charges nothing
            assert row.record.outcome == "engine_failed" and row.charge.total == 0, attempt
        assert (attempt.cost is not None) == (attempt.told and attempt.status == 200), attempt
        if attempt.cost is not None:
            assert row.charge.total == attempt.cost, attempt

    # nothing else: the other rows are of requests a kill cut short, at most one per such request
    extra = set(row_ids) - {attempt.gateway_id for attempt in done}
    cut_ids = {attempt.gateway_id for attempt in cut if attempt.gateway_id is not None}
    headless = sum(1 for attempt in attempts if attempt.connected and attempt.gateway_id is None)
    assert len(extra - cut_ids) <= headless, (sorted(extra - cut_ids), headless)

    # every journal was drained and removed; a kill tears at most a last line, it corrupts none
    assert [path.name for path in journal_root(tmp_path).iterdir()] == []
    for log in logs:
        output = log.read_text()
        assert "Traceback" not in output and "NOT stored" not in output, output
