"""A gateway whose database or Redis goes away under it, each a server of the test's own (never the shared
ones): keys already seen keep working, the rest is a 503 that says why, the outage is logged once, and no
money is lost or counted twice once they are back."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.chat import MESSAGES
from tests.conftest import Gateway, StartGateway
from tests.gateway.database.postgres_server import PostgresServer
from tests.gateway.limits.redis_server import REDIS_SERVER, RedisServer

ADMIN = "admin-token-0123456789abcdef"
PATIENT_S = 30.0  # deadlines of the test itself, far past what each wait takes


def outage_gateway(start_gateway: StartGateway, engine: str, database_url: str, **extra: Any) -> Gateway:
    return start_gateway(
        [engine],
        [engine],
        auth={"mode": "keys", "admin_tokens": [ADMIN]},
        database={"url": database_url},
        **extra,
    )


def admin(gateway: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, f"{gateway.url}/admin{path}", headers={"authorization": f"Bearer {ADMIN}"}, **kwargs
    )


def new_key(gateway: Gateway, tenant: str, **body: Any) -> str:
    """A new key's secret (its id is the part between the dashes)."""
    if admin(gateway, "GET", "/tenants").json()["data"] == []:
        assert admin(gateway, "POST", "/tenants", json={"id": tenant}).status_code == 201
    created = admin(gateway, "POST", "/keys", json={"tenant": tenant, "tiers": ["fast"], **body})
    assert created.status_code == 201, created.text
    secret: str = created.json()["secret"]
    return secret


def key_id(secret: str) -> str:
    return secret.split("-")[1]


def cost_of(client: openai.OpenAI) -> int:
    """One request; the cost the gateway told the client."""
    reply = client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=5)
    assert reply.usage is not None and reply.usage.model_extra is not None
    cost: int = reply.usage.model_extra["cost_micros"]
    return cost


def billed(gateway: Gateway, key: str) -> tuple[int, int] | None:
    """(requests, micros) in the ledger for the key's tenant this month, by GET /v1/usage; None while the
    database cannot be reached."""
    response = httpx.get(gateway.url + "/v1/usage", headers={"authorization": f"Bearer {key}"})
    if response.status_code == 503:
        return None
    assert response.status_code == 200, response.text
    rows = response.json()["data"]
    return sum(row["requests"] for row in rows), sum(row["cost_micros"] for row in rows)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = PATIENT_S) -> float:
    """Seconds it took `condition` to hold, polled every 20 ms."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout}s"
        time.sleep(0.02)
    return time.monotonic() - started


def error_code(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    body: Any = caught.value.body
    return caught.value.status_code, body["code"]


def test_a_database_outage_keeps_keys_already_seen_working_and_loses_no_money(
    throwaway_postgres: PostgresServer,  # first: it must outlive the gateway
    start_gateway: StartGateway,
    fast_engine: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = outage_gateway(start_gateway, fast_engine, throwaway_postgres.url)
    seen, unseen = new_key(gateway, "acme"), new_key(gateway, "acme")
    with (
        openai.OpenAI(base_url=gateway.v1, api_key=seen, max_retries=0) as client,
        openai.OpenAI(base_url=gateway.v1, api_key=unseen, max_retries=0) as stranger,
    ):
        told = [cost_of(client)]
        with caplog.at_level(logging.WARNING, logger="tiergate"):
            throwaway_postgres.stop()
            outage = time.monotonic()
            while time.monotonic() - outage < 2.5:  # past auth.cache_ttl_s: served from the stale cache
                told.append(cost_of(client))
            assert error_code(lambda: cost_of(stranger)) == (503, "key_store_unavailable")
            for path in ("/v1/usage", "/admin/keys"):
                headers = {"authorization": f"Bearer {seen if path == '/v1/usage' else ADMIN}"}
                answer = httpx.get(gateway.url + path, headers=headers)
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "database_unavailable"
                assert answer.headers["retry-after"] == "1"
            throwaway_postgres.start()
            wait_until(lambda: billed(gateway, seen) == (len(told), sum(told)), "the journal drained")
        assert cost_of(stranger) > 0
    assert len(told) > 10
    records = [r for r in caplog.records if r.name.startswith("tiergate")]
    assert [r for r in records if r.exc_info] == []  # no traceback per refused request
    lines: dict[str, int] = {}
    for record in records:
        if record.levelno >= logging.WARNING:
            lines[record.name] = lines.get(record.name, 0) + 1
    assert lines and all(count <= 2 for count in lines.values()), lines  # when it begins and when it ends


@dataclass(frozen=True)
class Outcome:
    key: str
    started: float
    ended: float
    status: int  # 200, or the error's
    code: str | None
    cost: int  # what the client was told, in micros (0 when refused)


class Load:
    """Clients of the OpenAI SDK sending requests back to back, two per key, until `stop()`; every outcome
    is kept."""

    def __init__(self, gateway: Gateway, keys: list[str]) -> None:
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(gateway, key), daemon=True)
            for key in keys
            for _ in (1, 2)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=PATIENT_S)

    def _run(self, gateway: Gateway, key: str) -> None:
        with openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0, timeout=PATIENT_S) as client:
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    cost, status, code = cost_of(client), 200, None
                except openai.APIStatusError as exc:
                    body: Any = exc.body
                    cost, status, code = (
                        0,
                        exc.status_code,
                        body.get("code") if isinstance(body, dict) else None,
                    )
                except openai.APIConnectionError:
                    cost, status, code = 0, 0, "connection"
                with self._lock:
                    self.outcomes.append(Outcome(key, started, time.monotonic(), status, code, cost))

    def told(self, key: str | None = None, ended_before: float = float("inf")) -> int:
        with self._lock:
            return sum(o.cost for o in self.outcomes if key in (None, o.key) and o.ended < ended_before)

    def during(self, start: float, end: float) -> tuple[int, int, float]:
        """(served, refused, median seconds) of the requests that began in [start, end)."""
        with self._lock:
            began = [o for o in self.outcomes if start <= o.started < end]
        served = sum(o.status == 200 for o in began)
        median = statistics.median(o.ended - o.started for o in began) if began else 0.0
        return served, len(began) - served, round(median, 3)


def budget_spent(gateway: Gateway) -> dict[str, int] | None:
    """What each budget's counter says was spent in its window (tenant's and keys', by subject); None while
    they cannot be read."""
    answer = admin(gateway, "GET", "/tenants/acme/budgets")
    if answer.status_code == 503:
        return None
    assert answer.status_code == 200, answer.text
    return {budget["subject"]: budget["spent_micros"] for budget in answer.json()["data"]}


@pytest.fixture
def throwaway_redis() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("NO redis-server: cannot take Redis away from a gateway")
    with RedisServer() as server:
        yield server


def test_chaos_postgres_then_redis_goes_away_under_load(
    throwaway_postgres: PostgresServer,  # first: both must outlive the gateway
    throwaway_redis: RedisServer,
    start_gateway: StartGateway,
    fast_engine: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Keys and ledger on PostgreSQL, limits and budgets on Redis, four clients sending requests: PostgreSQL
    is crashed for 10 s, then Redis hung for 10 s. Every request of the keys seen before is served, the
    ledger holds what the clients were told, and the budgets' counters hold what the ledger holds."""
    gateway = outage_gateway(
        start_gateway, fast_engine, throwaway_postgres.url, redis={"url": throwaway_redis.url}
    )
    limits = {"fast": {"rpm": 1_000_000, "tpm": 1_000_000_000}}
    keys = [new_key(gateway, "acme", limits=limits) for _ in range(2)]
    unseen = new_key(gateway, "acme")
    for path in ["/tenants/acme", *(f"/keys/{key_id(key)}" for key in keys)]:  # one window: no midnight
        assert admin(gateway, "PUT", f"{path}/budgets/total", json={"limit": "1000"}).status_code == 200
    figures: dict[str, float] = {}
    with caplog.at_level(logging.WARNING, logger="tiergate"), Load(gateway, keys) as load:
        wait_until(lambda: load.told() > 0, "the first answers")
        time.sleep(2)

        throwaway_postgres.stop()
        postgres_down = time.monotonic()
        time.sleep(1)
        asked = time.monotonic()
        with openai.OpenAI(base_url=gateway.v1, api_key=unseen, max_retries=0) as stranger:
            assert error_code(lambda: cost_of(stranger)) == (503, "key_store_unavailable")
        figures["unseen key refused in (s)"] = time.monotonic() - asked
        time.sleep(max(0.0, postgres_down + 10 - time.monotonic()))
        throwaway_postgres.start()
        postgres_up = time.monotonic()
        figures["admin API back after (s)"] = wait_until(
            lambda: admin(gateway, "GET", "/tenants").status_code == 200, "the admin API answered again"
        )
        journaled = load.told(ended_before=postgres_up)
        figures["journal in the ledger after (s)"] = wait_until(
            lambda: (billed(gateway, keys[0]) or (0, 0))[1] >= journaled, "the journal drained"
        )
        time.sleep(2)

        throwaway_redis.pause()
        redis_down = time.monotonic()
        time.sleep(1)
        assert budget_spent(gateway) is None  # 503 budget_unavailable, not a 500
        time.sleep(max(0.0, redis_down + 10 - time.monotonic()))
        throwaway_redis.resume()
        redis_up = time.monotonic()
        settled = load.told(ended_before=redis_up)
        figures["counters caught up after (s)"] = wait_until(
            lambda: (budget_spent(gateway) or {}).get("acme", 0) >= settled, "the settlements reached Redis"
        )
        time.sleep(1)
    stopped = time.monotonic()

    told, served = load.told(), sum(o.status == 200 for o in load.outcomes)
    wait_until(lambda: billed(gateway, keys[0]) == (served, told), "the ledger caught up")
    wait_until(
        lambda: budget_spent(gateway) == {"acme": told, **{key_id(k): load.told(k) for k in keys}},
        "the counters equal the ledger",
    )
    phases = {
        "before": load.during(0, postgres_down),
        "PostgreSQL down": load.during(postgres_down, postgres_up),
        "between": load.during(postgres_up, redis_down),
        "Redis hung": load.during(redis_down, redis_up),
        "after": load.during(redis_up, stopped),
    }
    times = ", ".join(f"{name} {seconds:.2f}" for name, seconds in figures.items())
    print(f"\nchaos: (served, refused, median s) by phase {phases}; {times}")
    refused = [o for o in load.outcomes if o.status != 200]
    assert refused == []
    assert phases["PostgreSQL down"][0] > 0 and phases["Redis hung"][0] > 0
    tracebacks = [r.getMessage() for r in caplog.records if r.name.startswith("tiergate") and r.exc_info]
    assert tracebacks == []
