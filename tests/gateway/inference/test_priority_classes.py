"""A tenant's priority class, from its key to the queue, the engine and the bill; a key's `max_concurrent`,
its own excess a 429 with retry-after, its places given back when requests end however they end.

Driven by events: a held stream is the request in flight, queue lengths are read from /metrics, and a place
given back is waited for (a generous deadline), never slept for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from engines.simulator import create_simulator_app, profile
from gateway import create_app
from gateway.tiers import ENGINE_PRIORITY, Tier, engine_priority
from tests.chat import MESSAGES
from tests.conftest import Gateway, StartEngine, StartGateway, gateway_settings, wait_ready
from tests.gateway.inference.test_engine_priority import Recording
from tests.gateway.keys.test_http import ADMIN, keyed_gateway
from tests.prometheus import metric, scrape
from tests.servers import serving

# long enough to hold: 400 tokens 50 ms apart (the tests close it long before it ends)
SLOW = profile("fast", zero_latency=False, ttft_base_s=0.001, itl_s=0.05, output_tokens_range=(400, 400))
KEYS = {"mode": "keys", "admin_tokens": [ADMIN], "cache_ttl_s": 0.3}


def until(check: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.02)


def tenant_key(gateway_url: str, tenant: str, priority_class: str = "standard", **key: Any) -> str:
    headers = {"authorization": f"Bearer {ADMIN}"}
    created = httpx.post(
        f"{gateway_url}/admin/tenants",
        json={"id": tenant, "priority_class": priority_class},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["priority_class"] == priority_class
    body = {"tenant": tenant, "tiers": ["fast", "deliberate"], **key}
    response = httpx.post(f"{gateway_url}/admin/keys", json=body, headers=headers)
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


@pytest.fixture
def queued_gateway(tmp_path: Path) -> Iterator[tuple[str, Recording]]:
    """Keys in SQLite, the deliberate tier one slot (10% of 10) on a slow engine that takes `priority`."""
    recording = Recording()
    with serving(create_simulator_app(SLOW)) as engine:
        settings = gateway_settings(
            [engine],
            [engine],
            auth=KEYS,
            database={"url": f"sqlite:///{tmp_path / 'keys.sqlite3'}"},
            deliberate_pool={"priority": True},
            fast_pool={"priority": True},
            server={
                "max_concurrent_requests": 10,
                "tier_shares": {"deliberate": 0.1},
                "max_queue_wait_s": {"deliberate": 120.0, "fast": 0.5},
            },
        )
        with serving(create_app(settings, transport=recording)) as url:
            wait_ready(url)
            yield url, recording


async def test_premium_waits_ahead_of_standard_and_the_engine_is_told(
    queued_gateway: tuple[str, Recording],
) -> None:
    url, recording = queued_gateway
    standard = tenant_key(url, "plain")
    premium = tenant_key(url, "gold", "premium")
    ended: list[str] = []

    def waiting() -> float:
        return metric(scrape(url), "tiergate_tier_queue_length", tier="deliberate")

    async with httpx.AsyncClient(timeout=120) as client:

        async def ask(name: str, key: str) -> httpx.Response:
            body = {"model": "qwen3-8b:deliberate", "messages": MESSAGES, "max_tokens": 2}
            reply = await client.post(
                url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
            )
            ended.append(name)
            return reply

        holder = {"model": "qwen3-8b:deliberate", "messages": MESSAGES, "stream": True}
        headers = {"authorization": f"Bearer {standard}"}
        async with client.stream("POST", url + "/v1/chat/completions", json=holder, headers=headers) as held:
            assert held.status_code == 200
            lines = held.aiter_lines()  # kept: an iterator collected would close the stream
            await anext(lines)  # the tier's one slot is held
            late = asyncio.create_task(ask("standard", standard))
            await asyncio.to_thread(until, lambda: waiting() == 1, "the standard request waits")
            early = asyncio.create_task(ask("premium", premium))
            await asyncio.to_thread(until, lambda: waiting() == 2, "the premium request waits")
        # the client left the held stream: its slot goes to the premium request, though it came second
        replies = await asyncio.gather(early, late)
    assert [reply.status_code for reply in replies] == [200, 200]
    assert ended == ["premium", "standard"]
    # the engine was told: the holder and the standard request at the tier's priority, premium one ahead
    priorities = [body["priority"] for body in recording.bodies]
    assert priorities == [10, 9, 10]
    assert engine_priority(Tier.DELIBERATE, "premium") == ENGINE_PRIORITY[Tier.DELIBERATE] - 1
    # premium never overtakes a faster tier
    assert engine_priority(Tier.DELIBERATE, "premium") > engine_priority(Tier.FAST, "standard")


def test_a_premium_request_is_billed_by_the_class_rule(
    start_gateway: StartGateway, fast_engine: str, tmp_path: Path
) -> None:
    gateway = keyed_gateway(start_gateway, fast_engine, tmp_path)
    costs = {}
    for tenant, priority_class in (("plain", "standard"), ("gold", "premium")):
        key = tenant_key(gateway.url, tenant, priority_class)
        with openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0) as client:
            reply = client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=8, seed=7)
        assert reply.usage is not None
        usage = reply.usage.model_dump()
        costs[priority_class] = usage
    standard, premium = costs["standard"], costs["premium"]
    assert (premium["prompt_tokens"], premium["completion_tokens"]) == (
        standard["prompt_tokens"],
        standard["completion_tokens"],
    )
    # the demo book's rule: 1.2 times the charge, the difference one line, rounded once, half up
    surcharge = (standard["cost_micros"] * 200_000 + 500_000) // 1_000_000
    assert premium["cost_details"]["amounts_micros"]["class_surcharge"] == surcharge
    assert premium["cost_micros"] == standard["cost_micros"] + surcharge
    assert "class_surcharge" not in standard["cost_details"]["amounts_micros"]


@pytest.fixture
def capped(start_engine: StartEngine, start_gateway: StartGateway, tmp_path: Path) -> tuple[Gateway, str]:
    gateway = keyed_gateway(start_gateway, start_engine(SLOW), tmp_path)
    return gateway, tenant_key(gateway.url, "acme", max_concurrent=1)


def refused(gateway: Gateway) -> float:
    return metric(scrape(gateway.url), "tiergate_refusals_total", reason="concurrency", tier="fast")


def free_again(gateway: Gateway, key: str) -> None:
    """Wait until the key's one place is free again: a request of it is served (the refused ones wait)."""

    def served() -> bool:
        body = {"model": "qwen3-8b", "messages": MESSAGES, "max_tokens": 1}
        reply = httpx.post(
            gateway.v1 + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key}"},
            timeout=60,
        )
        assert reply.status_code in (200, 429), reply.text
        return reply.status_code == 200

    until(served, "the key's place was given back")


def test_one_past_max_concurrent_is_a_429_until_the_stream_ends(capped: tuple[Gateway, str]) -> None:
    gateway, key = capped
    with openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0) as client:
        stream = client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, stream=True)
        next(iter(stream))  # in flight: the key's one place is taken
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=1)
        error = caught.value
        assert error.code == "concurrency_limit_exceeded"
        assert error.response.headers["retry-after"] == "1"
        assert error.response.headers["retry-after-ms"] == "1000"
        assert error.body is not None and error.body["type"] == "rate_limit_error"  # type: ignore[index]
        assert refused(gateway) == 1
        # another tier is no way around it: the cap is the key's
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="qwen3-8b:deliberate", messages=MESSAGES, max_tokens=1)
        stream.close()  # the client leaves mid-stream: its place is given back
    free_again(gateway, key)
    # a stream read to its last byte gives it back too
    with openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0) as client:
        short = client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, stream=True, max_tokens=3)
        assert list(short)
    free_again(gateway, key)


def test_a_stream_the_engine_cuts_gives_its_place_back(
    start_engine: StartEngine, start_gateway: StartGateway, tmp_path: Path
) -> None:
    dying = start_engine(profile("fast", zero_latency=True, die_after_chunks_rate=1.0, die_after_chunks=4))
    gateway = keyed_gateway(start_gateway, dying, tmp_path)
    key = tenant_key(gateway.url, "acme", max_concurrent=1)
    body = {"model": "qwen3-8b", "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {key}"}
    for _ in range(3):  # each one cut by the engine; each gives its place back before its last byte
        with httpx.stream("POST", gateway.v1 + "/chat/completions", json=body, headers=headers) as reply:
            assert reply.status_code == 200
            assert b"error" in reply.read()  # the engine died mid-stream: said in the stream
