"""A gateway short of its own resources says so (503 `gateway_overloaded`) and blames no replica."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from engines import EngineTransport
from engines.simulator import profile
from gateway import create_app
from tests.chat import MESSAGES
from tests.conftest import FAST, StartEngine, gateway_settings, wait_ready
from tests.prometheus import metric
from tests.servers import serving


class Exhaustible(httpx.AsyncBaseTransport):
    """The engine transport, until `exhausted` is set: then every call fails as the real one does when the
    process is out of file descriptors (`ConnectError` from `OSError(EMFILE)`)."""

    def __init__(self) -> None:
        self._inner = EngineTransport()
        self.exhausted = False
        self.refused: list[str] = []  # the paths of the calls refused

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.exhausted:
            self.refused.append(request.url.path)
            cause = OSError(errno.EMFILE, "Too many open files")
            raise httpx.ConnectError(f"cannot connect: {cause}", request=request) from cause
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def assert_overloaded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as failure:
        client.chat.completions.create(model="qwen3-8b", messages=MESSAGES)
    assert failure.value.status_code == 503 and failure.value.code == "gateway_overloaded"
    assert int(failure.value.response.headers["retry-after"]) >= 1


def test_out_of_descriptors_is_503_gateway_overloaded_and_no_replica_is_ejected(
    start_engine: StartEngine,
) -> None:
    replicas = [start_engine(FAST), start_engine(FAST)]
    transport = Exhaustible()
    app = create_app(gateway_settings(replicas, replicas), transport=transport)
    with serving(app) as url:
        wait_ready(url)
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        transport.exhausted = True
        for _ in range(6):  # twice what ejects a replica (breaker.eject_after_failures: 3)
            assert_overloaded(client)
        # the health checks (every 0.2 s) meet the same shortage
        wait_for(lambda: transport.refused.count("/health") >= 6, "health checks refused")
        ready = httpx.get(url + "/readyz")
        body = ready.json()
        # unready for its own shortage, if at all (the door shut: a balancer steers away), never its replicas'
        assert ready.status_code == (503 if body["door"]["saturated"] else 200), ready.text
        for pool in body["pools"].values():
            assert pool["ready"]
            assert [(r["healthy"], r["failures"]) for r in pool["replicas"]] == [(True, 0), (True, 0)]
        transport.exhausted = False

        def served() -> bool:
            try:
                return bool(client.chat.completions.create(model="qwen3-8b", messages=MESSAGES).choices)
            except openai.InternalServerError as exc:
                codes.append(exc.code)
                return False

        codes: list[str | None] = []

        wait_for(served, "a request served once descriptors are free again")
        assert set(codes) <= {"gateway_overloaded"}  # nothing else while it recovers


def test_over_the_concurrency_limit_the_excess_gets_503_while_the_admitted_stream_completes(
    start_engine: StartEngine,
) -> None:
    # a stream of 100 tokens, 0.05 s apart: in flight for about 5 s
    engine = start_engine(profile("fast", ttft_base_s=0.002, itl_s=0.05, output_tokens_range=(100, 100)))
    app = create_app(gateway_settings([engine], [engine], server={"max_concurrent_requests": 1}))
    with serving(app) as url:
        wait_ready(url)
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        stream = client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, stream=True)
        chunks = iter(stream)
        next(chunks)  # admitted, and streaming
        assert_overloaded(client)
        assert httpx.get(url + "/healthz").status_code == 200  # only inference is limited
        ready = httpx.get(url + "/readyz")  # full: unready, so that a balancer steers away
        assert ready.status_code == 503 and ready.json()["door"]["saturated"], ready.text
        finish = [choice.finish_reason for chunk in chunks for choice in chunk.choices]
        assert finish[-1] in ("stop", "length")  # the admitted stream ran to its end
        wait_for(lambda: httpx.get(url + "/readyz").status_code == 200, "ready again once it ended")
        assert client.chat.completions.create(model="qwen3-8b", messages=MESSAGES).choices


def test_refusals_spread_the_retry_they_ask_for(start_engine: StartEngine) -> None:
    """The OpenAI SDKs wait exactly what `retry-after-ms` says: clients refused together are told different
    waits, from half to one and a half times a second, or they would all come back together."""
    # a stream of 400 tokens, 0.05 s apart: in flight for about 20 s, while the others are refused
    engine = start_engine(profile("fast", ttft_base_s=0.002, itl_s=0.05, output_tokens_range=(400, 400)))
    app = create_app(gateway_settings([engine], [engine], server={"max_concurrent_requests": 1}))
    waits = []
    with serving(app) as url:
        wait_ready(url)
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        stream = client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, stream=True)
        next(iter(stream))  # admitted, and streaming: the door is full
        with httpx.Client(base_url=url + "/v1") as http:
            for _ in range(40):
                refused = http.post("/chat/completions", json={"model": "qwen3-8b", "messages": MESSAGES})
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "gateway_overloaded"
                wait_ms = int(refused.headers["retry-after-ms"])
                assert 500 <= wait_ms <= 1500
                assert int(refused.headers["retry-after"]) in (1, 2)
                assert int(refused.headers["retry-after"]) * 1000 >= wait_ms  # whole seconds, rounded up
                waits.append(wait_ms)
        stream.close()
        client.close()
    assert len(set(waits)) >= 20  # spread, not one wait for all


@contextmanager
def one_deliberate_slot_held(
    start_engine: StartEngine, tokens: int, **server: Any
) -> Iterator[tuple[str, openai.OpenAI, Iterator[ChatCompletionChunk]]]:
    """A gateway whose deliberate tier has one slot (its share of a limit of 4), taken by a deliberation that
    streams `tokens` tokens 0.05 s apart: its URL, a client, and the rest of that stream."""
    slow = start_engine(profile("fast", ttft_base_s=0.002, itl_s=0.05, output_tokens_range=(tokens, tokens)))
    limits = {"max_concurrent_requests": 4, "tier_shares": {"deliberate": 0.25}, **server}
    app = create_app(gateway_settings([start_engine(FAST)], [slow], server=limits))
    with serving(app) as url:
        wait_ready(url)
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        stream = client.chat.completions.create(model="qwen3-8b:deliberate", messages=MESSAGES, stream=True)
        chunks = iter(stream)
        next(chunks)  # the deliberate tier's one slot is taken until this stream ends
        yield url, client, chunks


def test_deliberations_past_their_share_wait_then_are_shed_while_the_fast_tier_is_served(
    start_engine: StartEngine,
) -> None:
    # the deliberation holding the slot streams for about 5 s
    held = one_deliberate_slot_held(start_engine, 100, max_queue_wait_s={"deliberate": 0.2})
    with held as (url, client, chunks):
        with pytest.raises(openai.InternalServerError) as shed:  # waited its deadline, then shed
            client.chat.completions.create(model="qwen3-8b:deliberate", messages=MESSAGES)
        assert shed.value.status_code == 503 and shed.value.code == "gateway_overloaded"
        assert int(shed.value.response.headers["retry-after"]) >= 1
        assert client.chat.completions.create(model="qwen3-8b:fast", messages=MESSAGES).choices
        metrics = httpx.get(url + "/metrics").text
        assert 'tiergate_tier_queue_shed_total{tier="deliberate"} 1.0' in metrics
        assert 'tiergate_tier_requests_in_flight{tier="deliberate"} 1.0' in metrics
        finish = [choice.finish_reason for chunk in chunks for choice in chunk.choices]
        assert finish[-1] in ("stop", "length")
        wait_for(
            lambda: (
                'tiergate_tier_requests_in_flight{tier="deliberate"} 0.0' in httpx.get(url + "/metrics").text
            ),
            "the slot given back at the stream's end",
        )
        assert client.chat.completions.create(model="qwen3-8b:deliberate", messages=MESSAGES).choices


def test_a_requests_own_wait_is_measured_without_its_time_in_its_tiers_queue(
    start_engine: StartEngine,
) -> None:
    with one_deliberate_slot_held(start_engine, 60) as (url, client, chunks):  # held for about 3 s
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(
                client.chat.completions.create, model="qwen3-8b:deliberate", messages=MESSAGES
            )  # waits in the tier's queue for that slot
            wait_for(
                lambda: metric(scrape(url), "tiergate_tier_queue_length", tier="deliberate") == 1, "queued"
            )
            assert [choice.finish_reason for chunk in chunks for choice in chunk.choices][-1] is not None
            assert queued.result(timeout=60).choices

        def both_waits_counted() -> bool:
            return metric(scrape(url), "tiergate_gateway_wait_seconds_count") == 2

        wait_for(both_waits_counted, "both requests' waits counted at the loop's ticks")
        text = scrape(url)
        in_queue = metric(text, "tiergate_tier_queue_wait_seconds_sum", tier="deliberate")
        assert in_queue > 0
        # the seconds the second request spent in its tier's queue (most of the stream's 3 s) are not the
        # gateway's own wait
        assert metric(text, "tiergate_gateway_wait_seconds_sum") < in_queue


def scrape(url: str) -> str:
    return httpx.get(url + "/metrics").text
