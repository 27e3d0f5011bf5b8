"""A gateway whose database or Redis goes away under it, each a server of the test's own (never the shared
ones): keys already seen keep working, the rest is a 503 that says why, the outage is logged once, and no
money is lost or counted twice once they are back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway, StartGateway
from tests.gateway.database.postgres_server import PostgresServer

ADMIN = "admin-token-0123456789abcdef"
MESSAGES: Any = [{"role": "user", "content": "hi"}]
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
    if admin(gateway, "GET", "/tenants").json()["data"] == []:
        assert admin(gateway, "POST", "/tenants", json={"id": tenant}).status_code == 201
    created = admin(gateway, "POST", "/keys", json={"tenant": tenant, "tiers": ["fast"], **body})
    assert created.status_code == 201, created.text
    secret: str = created.json()["secret"]
    return secret


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
