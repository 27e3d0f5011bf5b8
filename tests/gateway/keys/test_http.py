"""Keys, permissions, the admin API and rate limits, through HTTP and the OpenAI SDK."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from engines.simulator import profile
from tests.chat import MESSAGES
from tests.conftest import Gateway, StartEngine, StartGateway, unused_url

ADMIN = "admin-token-0123456789abcdef"


def keyed_gateway(
    start_gateway: StartGateway,
    fast_engine: str,
    tmp_path: Path,
    database_url: str | None = None,
    **extra: Any,
) -> Gateway:
    return start_gateway(
        [fast_engine],
        [fast_engine],
        auth={"mode": "keys", "admin_tokens": [ADMIN], "cache_ttl_s": 0.3},
        database={"url": database_url or f"sqlite:///{tmp_path / 'keys.sqlite3'}"},
        **extra,
    )


def admin(gateway: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{gateway.url}/admin{path}", headers=headers, **kwargs)


def new_key(gateway: Gateway, tenant: str = "acme", **body: Any) -> dict[str, Any]:
    admin(gateway, "POST", "/tenants", json={"id": tenant})
    response = admin(
        gateway, "POST", "/keys", json={"tenant": tenant, "tiers": ["fast", "deliberate"], **body}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


SDK = Callable[[Gateway, str], openai.OpenAI]


@pytest.fixture
def sdk() -> Iterator[SDK]:
    """OpenAI clients for a gateway and key, closed after the test."""
    clients: list[openai.OpenAI] = []

    def make(gateway: Gateway, key: str) -> openai.OpenAI:
        clients.append(openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def gateway(database_url: str, start_gateway: StartGateway, fast_engine: str, tmp_path: Path) -> Gateway:
    """A gateway with keys in SQLite, then in PostgreSQL (database_url first: it must outlive the gateway)."""
    return keyed_gateway(start_gateway, fast_engine, tmp_path, database_url)


def test_a_key_opens_the_gateway_and_bad_keys_are_401(gateway: Gateway, sdk: SDK) -> None:
    key = new_key(gateway)
    reply = sdk(gateway, key["secret"]).chat.completions.create(
        model="qwen3-8b", messages=MESSAGES, max_tokens=3
    )
    assert reply.choices[0].message.content
    body = {"model": "qwen3-8b", "messages": MESSAGES}
    azure = httpx.post(gateway.v1 + "/chat/completions", json=body, headers={"api-key": key["secret"]})
    assert azure.status_code == 200
    presented_headers: list[dict[str, str]] = [
        {},
        {"authorization": "Bearer"},
        {"authorization": "Bearer sk-openai-style"},
        {"authorization": "Bearer tg-"},
        {"authorization": "Bearer tg-nope-nope"},
        {"authorization": f"Bearer {key['secret']}x"},
        {"authorization": f"Basic {key['secret']}"},
        {"api-key": "tg-abc-def"},
    ]
    for headers in presented_headers:
        response = httpx.post(gateway.v1 + "/chat/completions", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert key["secret"] not in response.text
    with pytest.raises(openai.AuthenticationError):
        sdk(gateway, "tg-abc-def").chat.completions.create(model="qwen3-8b", messages=MESSAGES)
    with pytest.raises(openai.AuthenticationError):
        sdk(gateway, "tg-abc-def").models.list()
    assert httpx.get(gateway.url + "/healthz").status_code == 200  # probes need no key


def test_revoked_and_expired_keys(gateway: Gateway, sdk: SDK) -> None:
    key = new_key(gateway)
    client = sdk(gateway, key["secret"])
    client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=2)
    assert admin(gateway, "POST", f"/keys/{key['id']}/revoke").json()["revoked"] is True
    time.sleep(0.4)  # the cache TTL (0.3 s here): the revocation's whole delay
    with pytest.raises(openai.AuthenticationError) as revoked:
        client.chat.completions.create(model="qwen3-8b", messages=MESSAGES)
    assert "revoked" in revoked.value.message
    expired = new_key(gateway, "old", expires_at="2020-01-01T00:00:00Z")
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(gateway, expired["secret"]).chat.completions.create(model="qwen3-8b", messages=MESSAGES)
    assert "expired" in caught.value.message


def test_tier_and_model_permissions_are_403(gateway: Gateway, sdk: SDK) -> None:
    key = new_key(gateway, tiers=["fast"], models=["qwen3-8b"])
    client = sdk(gateway, key["secret"])
    assert client.chat.completions.create(model="qwen3-8b:fast", messages=MESSAGES, max_tokens=2).choices
    with pytest.raises(openai.PermissionDeniedError) as tier:
        client.chat.completions.create(model="qwen3-8b:deliberate", messages=MESSAGES)
    assert tier.value.code == "tier_not_allowed"
    with pytest.raises(openai.PermissionDeniedError) as model:
        client.chat.completions.create(model="llama-3.1-8b", messages=MESSAGES)
    assert model.value.code == "model_not_allowed"
    assert [card.id for card in client.models.list()] == ["qwen3-8b:fast"]  # a key sees what it may use
    # what chat accepts from it, retrieve answers: the bare id and auto (which can only choose fast)
    assert client.chat.completions.create(model="qwen3-8b:auto", messages=MESSAGES, max_tokens=2).choices
    assert [client.models.retrieve(name).id for name in ("qwen3-8b", "qwen3-8b:auto")] == [
        "qwen3-8b",
        "qwen3-8b:auto",
    ]
    for hidden in ("qwen3-8b:deliberate", "llama-3.1-8b", "llama-3.1-8b:auto", "qwen3-32b:auto"):
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve(hidden)
    both = sdk(gateway, new_key(gateway, models=["qwen3-8b"])["secret"])
    assert sorted(card.id for card in both.models.list()) == [
        "qwen3-8b:auto",  # two tiers it may use: auto is a choice for this key
        "qwen3-8b:deliberate",
        "qwen3-8b:fast",
    ]


def test_admin_api(gateway: Gateway) -> None:
    key = new_key(gateway, name="ci", limits={"fast": {"rpm": 60}})
    assert key["secret"].startswith(f"tg-{key['id']}-") and key["key"].endswith("****")
    listed = admin(gateway, "GET", "/keys", params={"tenant": "acme"}).json()["data"]
    assert [row["id"] for row in listed] == [key["id"]]
    assert "secret" not in listed[0] and key["secret"] not in str(listed)
    patched = admin(gateway, "PATCH", f"/keys/{key['id']}", json={"limits": {"deliberate": {"tpm": 1000}}})
    assert patched.json()["limits"] == {"deliberate": {"rpm": None, "tpm": 1000}}
    assert admin(gateway, "GET", "/tenants").json()["data"][0]["id"] == "acme"
    assert admin(gateway, "POST", "/tenants", json={"id": "acme"}).status_code == 409
    assert admin(gateway, "POST", "/keys", json={"tenant": "ghost", "tiers": ["fast"]}).status_code == 404
    bad = admin(gateway, "POST", "/keys", json={"tenant": "acme", "tiers": ["turbo"]})
    assert bad.status_code == 400 and bad.json()["error"]["param"]
    assert (
        admin(
            gateway, "POST", "/keys", json={"tenant": "acme", "tiers": ["fast"], "models": ["gpt-9"]}
        ).status_code
        == 400
    )
    assert admin(gateway, "GET", "/keys/nope").status_code == 404


def test_admin_api_sets_and_shows_priority_classes_and_concurrency_caps(gateway: Gateway, sdk: SDK) -> None:
    created = admin(gateway, "POST", "/tenants", json={"id": "gold", "priority_class": "premium"})
    assert created.status_code == 201 and created.json()["priority_class"] == "premium"
    key = new_key(gateway, max_concurrent=2)  # tenant acme, standard by default
    assert (key["priority_class"], key["max_concurrent"]) == ("standard", 2)
    client = sdk(gateway, key["secret"])

    def amounts() -> dict[str, int]:
        reply = client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=2)
        assert reply.usage is not None
        kinds: dict[str, int] = reply.usage.model_dump()["cost_details"]["amounts_micros"]
        return kinds

    assert "class_surcharge" not in amounts()  # standard: read (and cached) as such
    tenant = admin(gateway, "PATCH", "/tenants/acme", json={"priority_class": "premium"})
    assert tenant.status_code == 200 and tenant.json()["priority_class"] == "premium"
    assert admin(gateway, "GET", "/tenants/acme").json()["priority_class"] == "premium"
    assert admin(gateway, "GET", f"/keys/{key['id']}").json()["priority_class"] == "premium"  # its tenant's
    listed = {t["id"]: t["priority_class"] for t in admin(gateway, "GET", "/tenants").json()["data"]}
    assert listed == {"acme": "premium", "gold": "premium"}
    uncapped = admin(gateway, "PATCH", f"/keys/{key['id']}", json={"max_concurrent": None})
    assert uncapped.json()["max_concurrent"] is None
    bad = admin(gateway, "PATCH", "/tenants/acme", json={"priority_class": "gold"})
    assert bad.status_code == 400 and bad.json()["error"]["code"]
    assert admin(gateway, "PATCH", f"/keys/{key['id']}", json={"max_concurrent": 0}).status_code == 400
    ghost = admin(gateway, "PATCH", "/tenants/ghost", json={"priority_class": "premium"})
    assert ghost.status_code == 404 and ghost.json()["error"]["code"] == "tenant_not_found"
    # the class reaches the key's next request at once on this replica: billed by the demo book's rule
    assert "class_surcharge" in amounts()


@pytest.mark.parametrize(
    ("authorization", "status", "code"),
    [
        (None, 401, "invalid_admin_token"),
        ("Bearer wrong-token-wrong-token", 401, "invalid_admin_token"),
        ("api-key", 403, "admin_token_required"),
    ],
)
def test_admin_api_refuses_everything_but_admin_tokens(
    gateway: Gateway, authorization: str | None, status: int, code: str
) -> None:
    if authorization == "api-key":
        authorization = f"Bearer {new_key(gateway)['secret']}"
    headers = {"authorization": authorization} if authorization else {}
    response = httpx.get(f"{gateway.url}/admin/keys", headers=headers)
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_rpm_limit_and_headers(gateway: Gateway, sdk: SDK) -> None:
    key = new_key(gateway, limits={"fast": {"rpm": 3}})
    client = sdk(gateway, key["secret"])
    raw = client.chat.completions.with_raw_response.create(model="qwen3-8b", messages=MESSAGES, max_tokens=2)
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    for _ in range(2):
        client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=2)
    assert refused.value.code == "rate_limit_exceeded"
    headers = refused.value.response.headers
    assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) > 0
    assert headers["x-ratelimit-remaining-requests"] == "0"
    # the limit is per tier: the deliberate tier has none on this key
    assert client.chat.completions.create(
        model="qwen3-8b:deliberate", messages=MESSAGES, max_tokens=2
    ).choices


def test_tpm_reserves_an_estimate_and_settles_to_the_real_count(gateway: Gateway, sdk: SDK) -> None:
    key = new_key(gateway, limits={"fast": {"tpm": 10_000}})
    client = sdk(gateway, key["secret"])
    first = client.chat.completions.with_raw_response.create(
        model="qwen3-8b", messages=MESSAGES, max_tokens=4000
    )
    used = first.parse().usage
    assert used is not None and used.total_tokens < 200
    # at admission ~4,000 tokens were held; once settled only the real count stays taken
    reserved_left = int(first.headers["x-ratelimit-remaining-tokens"])
    assert reserved_left <= 10_000 - 4000
    time.sleep(0.2)  # settlement runs just after the response
    second = client.chat.completions.with_raw_response.create(
        model="qwen3-8b", messages=MESSAGES, max_tokens=10
    )
    after = int(second.headers["x-ratelimit-remaining-tokens"])
    assert after > reserved_left + 3000  # the first request's unused reservation came back


async def test_tpm_reservations_held_by_running_requests_refuse_others(
    start_engine: StartEngine, start_gateway: StartGateway, tmp_path: Path
) -> None:
    slow = start_engine(profile("fast", ttft_base_s=0.3, itl_s=0.01, output_tokens_range=(10, 10)))
    gateway = keyed_gateway(start_gateway, slow, tmp_path)
    key = new_key(gateway, limits={"fast": {"tpm": 10_000}})
    body = {"model": "qwen3-8b", "messages": MESSAGES, "max_tokens": 6000}
    headers = {"authorization": f"Bearer {key['secret']}"}
    async with httpx.AsyncClient(timeout=10) as client:
        replies = await asyncio.gather(
            *(client.post(gateway.v1 + "/chat/completions", json=body, headers=headers) for _ in range(3))
        )
    # each holds ~6,000 of 10,000 tokens while it runs: one fits, the other two are refused
    assert sorted(reply.status_code for reply in replies) == [200, 429, 429]
    refused = next(reply for reply in replies if reply.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["x-ratelimit-remaining-tokens"]) < 6000


@pytest.mark.parametrize(("mode", "status"), [("open", 200), ("closed", 503)])
def test_redis_down_fails_open_or_closed(
    start_gateway: StartGateway, fast_engine: str, tmp_path: Path, mode: str, status: int
) -> None:
    gateway = keyed_gateway(
        start_gateway,
        fast_engine,
        tmp_path,
        redis={"url": unused_url().replace("http", "redis"), "failure_mode": mode},
    )
    key = new_key(gateway, limits={"fast": {"rpm": 100}})
    body = {"model": "qwen3-8b", "messages": MESSAGES, "max_tokens": 2}
    response = httpx.post(
        gateway.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key['secret']}"}
    )
    assert response.status_code == status
    if status == 503:
        assert response.json()["error"]["code"] == "limiter_unavailable" and response.headers["retry-after"]


def test_disabled_auth_is_announced_loudly(
    start_gateway: StartGateway, fast_engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tiergate"):
        gateway = start_gateway([fast_engine], [fast_engine], auth={"mode": "disabled"})
    assert any("AUTHENTICATION IS DISABLED" in record.getMessage() for record in caplog.records)
    body = {"model": "qwen3-8b", "messages": MESSAGES, "max_tokens": 2}
    assert httpx.post(gateway.v1 + "/chat/completions", json=body).status_code == 200  # no key needed


def test_a_tenant_sees_its_own_generations_and_usage(gateway: Gateway, sdk: SDK) -> None:
    mine, theirs = new_key(gateway, "acme"), new_key(gateway, "globex")
    raw = sdk(gateway, mine["secret"]).chat.completions.with_raw_response.create(
        model="qwen3-8b", messages=MESSAGES, max_tokens=5
    )
    usage = raw.parse().usage
    assert usage is not None and usage.model_extra is not None
    generation_id = raw.headers["x-tiergate-request-id"]

    def get(path: str, key: dict[str, Any], **params: str) -> httpx.Response:
        return httpx.get(
            gateway.url + path, params=params, headers={"authorization": f"Bearer {key['secret']}"}
        )

    deadline = time.monotonic() + 3  # the journal reaches the ledger within a fraction of a second
    while (found := get("/v1/generation", mine, id=generation_id)).status_code == 404:
        assert time.monotonic() < deadline, "the generation never reached the ledger"
        time.sleep(0.05)
    data = found.json()["data"]
    assert data["cost_micros"] == usage.model_extra["cost_micros"] and data["model"] == "qwen3-8b:fast"
    assert data["tokens_completion"] == usage.completion_tokens and data["outcome"] == "ok"
    other = get("/v1/generation", theirs, id=generation_id)
    assert other.status_code == 404 and other.json()["error"]["code"] == "generation_not_found"

    acme = get("/v1/usage", mine).json()
    assert [(row["model"], row["requests"]) for row in acme["data"]] == [("qwen3-8b", 1)]
    assert acme["data"][0]["cost_micros"] == data["cost_micros"] and acme["tenant"] == "acme"
    assert get("/v1/usage", theirs).json()["data"] == []
    assert get("/v1/usage", mine, period="2020-01").json()["data"] == []
    assert get("/v1/usage", mine, period="soon").status_code == 400
    assert httpx.get(gateway.url + "/v1/usage").status_code == 401


def test_invoice_and_exports_add_up_to_what_clients_were_told(gateway: Gateway, sdk: SDK) -> None:
    key = new_key(gateway, "acme")
    client = sdk(gateway, key["secret"])
    told = 0
    for model in ("qwen3-8b", "qwen3-8b:deliberate", "llama-3.1-8b"):
        usage = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=8).usage
        assert usage is not None and usage.model_extra is not None
        told += usage.model_extra["cost_micros"]
    headers = {"authorization": f"Bearer {key['secret']}"}
    deadline = time.monotonic() + 3
    while (
        sum(row["requests"] for row in httpx.get(gateway.v1 + "/usage", headers=headers).json()["data"]) < 3
    ):
        assert time.monotonic() < deadline, "the requests never reached the ledger"
        time.sleep(0.05)

    bill = admin(gateway, "GET", "/billing/invoice", params={"tenant": "acme"}).json()
    assert bill["total_micros"] == told and bill["requests"] == 3
    assert sum(line["amount_micros"] for line in bill["lines"]) == told
    assert {line["tier"] for line in bill["lines"]} == {"fast", "deliberate"}

    jsonl = admin(gateway, "GET", "/billing/export", params={"format": "jsonl", "tenant": "acme"})
    rows = [json.loads(line) for line in jsonl.text.splitlines()]
    assert len(rows) == 3 and jsonl.headers["content-type"].startswith("application/x-ndjson")
    csv_rows = list(
        csv.DictReader(io.StringIO(admin(gateway, "GET", "/billing/export", params={"format": "csv"}).text))
    )
    assert csv_rows and {row["request_id"] for row in csv_rows} == {
        row["record"]["request_id"] for row in rows
    }
    events = admin(gateway, "GET", "/billing/export", params={"format": "cloudevents"}).json()
    assert events and all(event["specversion"] == "1.0" and event["subject"] == "acme" for event in events)
    assert admin(gateway, "GET", "/billing/export", params={"format": "pdf"}).status_code == 400
    assert (
        httpx.get(
            gateway.url + "/admin/billing/invoice", params={"tenant": "acme"}, headers=headers
        ).status_code
        == 403
    )
