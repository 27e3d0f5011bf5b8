"""Streaming relay under failure: failover, client disconnects, engines dying mid-stream."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from engines.simulator import profile
from gateway import Outcome
from tests.chat import user
from tests.conftest import StartEngine, StartGateway, unused_url
from tests.prometheus import metric, scrape

MESSAGES = user("Tell me a long story.")
SLOW = profile("fast", zero_latency=False, ttft_base_s=0.001, itl_s=0.05, output_tokens_range=(400, 400))


def wait_until(condition: Any, timeout: float = 30.0) -> None:
    """Wait for an event, with a generous deadline (never a timing assertion)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def test_failover_around_a_dead_and_an_overloaded_replica(
    start_engine: StartEngine, start_gateway: StartGateway, fast_engine: str
) -> None:
    overloaded = start_engine(profile("fast", zero_latency=True, error_rate=1.0, error_status=503))
    gateway = start_gateway([unused_url(), overloaded, fast_engine], [fast_engine])
    client = openai.OpenAI(base_url=gateway.v1, api_key="test", max_retries=0)
    for stream in (False, True, False, True, False, True):
        raw = client.chat.completions.with_raw_response.create(
            model="qwen3-8b", messages=MESSAGES, max_tokens=4, stream=stream
        )
        parsed = raw.parse()
        if isinstance(parsed, openai.Stream):
            assert list(parsed)
        else:
            assert parsed.choices[0].message.content
        exchange = gateway.recorder.wait_for(raw.headers["x-request-id"])
        assert exchange.outcome is Outcome.OK and exchange.replica == fast_engine
    ready = httpx.get(gateway.url + "/readyz").json()
    assert ready["status"] == "ready"
    assert [replica["healthy"] for replica in ready["pools"]["fast"]["replicas"]] == [False, True, True]


def test_client_disconnect_cancels_the_upstream_stream(
    start_engine: StartEngine, start_gateway: StartGateway
) -> None:
    engine = start_engine(SLOW)  # 400 tokens at 50 ms: 20 s if nobody stopped it
    gateway = start_gateway([engine], [engine])
    body = {"model": "qwen3-8b", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", gateway.v1 + "/chat/completions", json=body) as response:
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(6), strict=False) if line.startswith("data: ")]
        assert received
    # closing the response dropped the connection mid-stream: the engine dropped the request (vLLM counts no
    # abort of its own) and the gateway counted one
    wait_until(lambda: metric(scrape(engine), "vllm:num_requests_running") == 0)
    wait_until(lambda: metric(scrape(gateway.url), "tiergate_engine_aborts_total", pool="fast") == 1)
    assert metric(scrape(engine), "vllm:request_success_total") == 0
    assert (
        metric(scrape(engine), "vllm:generation_tokens_total") < 400
    )  # stopped, not run to its end and dropped
    exchange = gateway.recorder.wait_for(request_id, timeout=30)
    assert exchange.outcome is Outcome.CLIENT_DISCONNECTED and exchange.usage is None
    assert exchange.tally is not None and exchange.tally.text()  # what was generated is known
    # the stream began with a 200, but a client that left is a 499 in the logs and metrics (as documented)
    assert exchange.status == 499
    requests = scrape(gateway.url)
    assert metric(requests, "tiergate_requests_total", status="499", outcome="client_disconnected") == 1
    assert metric(requests, "tiergate_requests_total", status="200") == 0


def test_client_disconnect_cancels_a_non_streaming_request(
    start_engine: StartEngine, start_gateway: StartGateway
) -> None:
    engine = start_engine(SLOW)
    gateway = start_gateway([engine], [engine])
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            gateway.v1 + "/chat/completions", json={"model": "qwen3-8b", "messages": MESSAGES}, timeout=0.5
        )
    wait_until(lambda: metric(scrape(gateway.url), "tiergate_engine_aborts_total", pool="fast") == 1)
    wait_until(lambda: metric(scrape(engine), "vllm:num_requests_running") == 0)
    assert metric(scrape(engine), "vllm:request_success_total") == 0  # aborted: counted in no finish reason
    exchange = gateway.recorder.exchanges[-1]
    assert exchange.outcome is Outcome.CLIENT_DISCONNECTED and exchange.status == 499


def test_engine_dying_mid_stream_ends_the_stream_with_an_error_event(
    start_engine: StartEngine, start_gateway: StartGateway
) -> None:
    dying = start_engine(profile("fast", zero_latency=True, die_after_chunks_rate=1.0, die_after_chunks=4))
    gateway = start_gateway([dying], [dying])
    body = {"model": "qwen3-8b", "messages": MESSAGES, "stream": True, "max_tokens": 50}
    with httpx.stream("POST", gateway.v1 + "/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        request_id = response.headers["x-request-id"]
    assert len(events) >= 2 and '"error"' in events[-1] and events[-1] != "[DONE]"
    assert httpx.Response(200, content=events[-1]).json()["error"]["code"] == "engine_error"
    exchange = gateway.recorder.wait_for(request_id)
    assert exchange.outcome is Outcome.ENGINE_FAILED and exchange.tally is not None

    client = openai.OpenAI(base_url=gateway.v1, api_key="test", max_retries=0)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, stream=True, max_tokens=50))


def test_streaming_is_relayed_as_it_is_generated(
    start_engine: StartEngine, start_gateway: StartGateway
) -> None:
    engine = start_engine(
        profile("fast", ttft_base_s=0.001, itl_s=0.03, num_speculative_tokens=0, output_tokens_range=(20, 20))
    )
    gateway = start_gateway([engine], [engine])
    body = {"model": "qwen3-8b", "messages": MESSAGES, "stream": True}
    arrivals = []
    start = time.monotonic()
    with httpx.stream("POST", gateway.v1 + "/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic() - start)
    # ~20 steps 30 ms apart: a buffering relay would deliver everything at the very end
    assert len(arrivals) >= 15
    assert arrivals[-1] - arrivals[0] > 0.3


@pytest.mark.parametrize("include_usage", [True, False], ids=["usage", "no-usage"])
def test_a_stream_read_many_events_at_a_time_is_renamed_and_metered(
    start_engine: StartEngine, start_gateway: StartGateway, include_usage: bool
) -> None:
    """An engine that outpaces the gateway (no latency at all): each read brings many events, which go out
    in one write, every one with the reply's id and the public model (the simulator's are its own), the
    usage chunk only when asked for, with its cost."""
    engine = start_engine(
        profile("fast", zero_latency=True, num_speculative_tokens=0, output_tokens_range=(300, 300))
    )
    gateway = start_gateway([engine], [engine])
    client = openai.OpenAI(base_url=gateway.v1, api_key="test", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="qwen3-8b",
        messages=MESSAGES,
        n=2,
        stream=True,
        stream_options={"include_usage": include_usage},
    ) as response:
        request_id = response.headers["x-tiergate-request-id"]
        chunks = list(response.parse())
    client.close()
    assert {chunk.id for chunk in chunks} == {f"chatcmpl-{request_id}"}
    assert {chunk.model for chunk in chunks} == {"qwen3-8b:fast"}
    texts = ["", ""]
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    tokens = sum(1 for chunk in chunks for choice in chunk.choices if choice.delta.content)
    exchange = gateway.recorder.wait_for(response.headers["x-request-id"])
    assert exchange.outcome is Outcome.OK and exchange.usage is not None and exchange.tally is not None
    assert (
        tokens == exchange.usage.completion_tokens == 600
    )  # every token of both choices relayed, a delta each
    assert texts == [exchange.tally.text(0), exchange.tally.text(1)] and all(texts)  # and metered as relayed
    usage_chunks = [chunk for chunk in chunks if chunk.usage is not None]
    if not include_usage:
        assert usage_chunks == []
        return
    assert usage_chunks == [chunks[-1]] and chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 600
    assert usage.model_extra is not None and usage.model_extra["cost_micros"] > 0


def test_streams_that_wait_for_the_loops_next_turn_lose_nothing(
    start_engine: StartEngine, start_gateway: StartGateway
) -> None:
    """A turn's share for streams so small (`server.stream_turn_s`, and no floor of streams a turn) that of
    the streams woken in a turn only the first runs and the others wait for the next: fast streams (a read's
    events at a time) and a deliberation of three samples (event by event) at once, each relayed whole and in
    order, and metered as relayed."""
    fast = start_engine(
        profile("fast", zero_latency=True, num_speculative_tokens=0, output_tokens_range=(300, 300))
    )
    deliberate = start_engine(profile("deliberate", zero_latency=True, reasoning_tokens_range=(60, 80)))
    gateway = start_gateway(
        [fast],
        [deliberate],
        server={"stream_turn_s": 1e-9, "stream_turn_streams": 1},
        deliberation={"efforts": {"high": {"floor": 0, "samples": 3}}, "default_effort": "high"},
    )
    client = openai.OpenAI(base_url=gateway.v1, api_key="test", max_retries=0)

    def fast_stream() -> tuple[str, str]:
        with client.chat.completions.with_streaming_response.create(
            model="qwen3-8b", messages=MESSAGES, stream=True
        ) as response:
            chunks = [chunk for chunk in response.parse() if chunk.choices]
            text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
            return response.headers["x-request-id"], text

    def deliberation() -> tuple[str, list[str]]:
        with client.chat.completions.with_streaming_response.create(
            model="qwen3-8b:deliberate", messages=MESSAGES, stream=True
        ) as response:
            chunks = list(response.parse())
            finishes = [choice.finish_reason for chunk in chunks for choice in chunk.choices]
            return response.headers["x-request-id"], [reason for reason in finishes if reason]

    with ThreadPoolExecutor(6) as pool:
        streams = [pool.submit(fast_stream) for _ in range(5)]
        deliberated = pool.submit(deliberation)
        relayed = [future.result(timeout=120) for future in streams]
        deliberation_id, finishes = deliberated.result(timeout=120)
    client.close()
    for request_id, text in relayed:
        exchange = gateway.recorder.wait_for(request_id)
        assert exchange.outcome is Outcome.OK and exchange.usage is not None and exchange.tally is not None
        assert exchange.usage.completion_tokens == 300 and text == exchange.tally.text(0) != ""
    exchange = gateway.recorder.wait_for(deliberation_id)
    assert exchange.outcome is Outcome.OK and exchange.usage is not None
    assert (exchange.usage.reasoning_tokens or 0) >= 3 * 60 and finishes == ["stop"]
    assert metric(scrape(gateway.url), "tiergate_stream_turn_waits_total") > 0  # they did wait
