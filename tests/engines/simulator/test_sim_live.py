"""The simulator on a real uvicorn server: the OpenAI SDK as client, disconnects, dropped connections."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from engines.simulator import Tokenizer, create_simulator_app
from tests.prometheus import metric

from .sim_support import MESSAGES, deliberate, fast, serving, sse_events

# The same conversation as MESSAGES, typed as the SDK wants it.
SDK_MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": MESSAGES[0]["content"]},
    {"role": "user", "content": MESSAGES[1]["content"]},
]


async def _aborted(url: str, *, within: float = 30.0) -> str:
    """Poll /metrics until the engine has dropped the request: nothing running any more (a generous deadline:
    an event is waited for, never timed); returns that metrics text. As in vLLM 0.32, the abort itself is
    counted nowhere: `finished_reason="abort"` stays 0."""
    started = time.perf_counter()
    async with httpx.AsyncClient() as client:
        while True:
            text = (await client.get(f"{url}/metrics")).text
            if metric(text, "vllm:num_requests_running") == 0:
                assert metric(text, "vllm:request_success_total", finished_reason="abort") == 0
                return text
            if time.perf_counter() - started > within:
                raise AssertionError(f"the request was not dropped within {within} s")
            await asyncio.sleep(0.005)


async def _read_stream(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], fault: str, into: list[bytes]
) -> None:
    async with client.stream("POST", url, json=body, headers={"x-sim-fault": fault}) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            into.append(chunk)


async def test_openai_sdk_streams_with_usage() -> None:
    app = create_simulator_app(fast(zero_latency=False, ttft_base_s=0.01, itl_s=0.001))
    async with (
        serving(app) as url,
        AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client,
    ):
        stream = await client.chat.completions.create(
            model="qwen3-8b",
            messages=SDK_MESSAGES,
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        *content_chunks, last = chunks
        assert last.choices == [] and last.usage is not None
        assert all(chunk.usage is None for chunk in content_chunks)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in content_chunks)
        assert last.usage.completion_tokens == Tokenizer().count(text)
        assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
        assert content_chunks[-1].choices[0].finish_reason in ("stop", "length")

        whole = await client.chat.completions.create(model="qwen3-8b", messages=SDK_MESSAGES, max_tokens=40)
        assert whole.choices[0].message.content == text
        assert whole.usage is not None and whole.usage.prompt_tokens_details is not None
        assert whole.usage.prompt_tokens_details.cached_tokens == 16  # the stream cached the prompt's block
        models = [model.id async for model in client.models.list()]
        assert models == ["qwen3-8b", "llama-3.1-8b"]


async def test_openai_sdk_reads_reasoning_and_errors() -> None:
    app = create_simulator_app(deliberate())
    async with (
        serving(app) as url,
        AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client,
    ):
        reply = await client.chat.completions.create(
            model="qwen3-32b", messages=SDK_MESSAGES, max_completion_tokens=50
        )
        assert reply.choices[0].message.model_extra is not None
        assert Tokenizer().count(reply.choices[0].message.model_extra["reasoning"]) == 50
        assert reply.usage is not None and reply.usage.completion_tokens_details is not None
        assert reply.usage.completion_tokens_details.reasoning_tokens == 50
        with pytest.raises(Exception, match="does not exist") as raised:
            await client.chat.completions.create(model="gpt-x", messages=SDK_MESSAGES)
        assert type(raised.value).__name__ == "NotFoundError"


async def test_client_disconnect_aborts_the_stream_promptly() -> None:
    itl = 0.05
    app = create_simulator_app(fast(zero_latency=False, ttft_base_s=0.0, itl_s=itl, num_speculative_tokens=0))
    async with serving(app) as url, httpx.AsyncClient() as client:
        body = {
            "model": "qwen3-8b",
            "messages": MESSAGES,
            "max_tokens": 1000,
            "ignore_eos": True,
            "stream": True,
        }
        received = b""
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_bytes():
                received += chunk
                if received.count(b"\n\n") >= 3:
                    assert app.engine.scheduler.running["qwen3-8b"] == 1
                    break  # leaving the block closes the connection mid-stream
        aborted = await _aborted(url)
        # it stopped generating: far fewer tokens than the 1,000 it would have written (one every 50 ms)
        generated = metric(aborted, "vllm:generation_tokens_total")
        assert 2 <= generated < 500
        text = (await client.get(f"{url}/metrics")).text
        assert metric(text, "vllm:generation_tokens_total") == generated  # and generates nothing more
        assert metric(text, "vllm:num_requests_running") == 0
        assert metric(text, "vllm:kv_cache_usage_perc") == 0
        assert metric(text, "vllm:request_success_total", finished_reason="length") == 0
        assert (await client.get(f"{url}/load")).json() == {"server_load": 0}


async def test_client_timeout_aborts_a_non_streaming_request() -> None:
    app = create_simulator_app(
        fast(zero_latency=False, ttft_base_s=0.0, itl_s=0.02, num_speculative_tokens=0)
    )
    async with serving(app) as url, httpx.AsyncClient() as client:
        body = {"model": "qwen3-8b", "messages": MESSAGES, "max_tokens": 500, "ignore_eos": True}
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{url}/v1/chat/completions", json=body, timeout=0.1)
        aborted = await _aborted(url)
        # stopped long before its 500 tokens (10 s at one every 20 ms), not run to the end and then dropped
        assert metric(aborted, "vllm:generation_tokens_total") < 250
        assert metric(aborted, "vllm:request_success_total", finished_reason="length") == 0
        assert app.engine.scheduler.running["qwen3-8b"] == 0


@pytest.mark.parametrize("zero_latency", [True, False], ids=["instant", "timed"])
async def test_die_after_drops_the_connection_mid_stream(zero_latency: bool) -> None:
    app = create_simulator_app(fast(zero_latency=zero_latency, ttft_base_s=0.0, itl_s=0.001))
    async with serving(app) as url, httpx.AsyncClient() as client:
        body = {
            "model": "qwen3-8b",
            "messages": MESSAGES,
            "max_tokens": 50,
            "ignore_eos": True,
            "stream": True,
        }
        received: list[bytes] = []
        with pytest.raises(httpx.RemoteProtocolError):
            await _read_stream(client, f"{url}/v1/chat/completions", body, "die-after=3", received)
        events = sse_events(b"".join(received))
        assert len(events) == 3 and events[0]["choices"][0]["delta"]["role"] == "assistant"
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(
                f"{url}/v1/chat/completions",
                json={**body, "stream": False},
                headers={"x-sim-fault": "die-after=1"},
            )
        # The server survives it.
        assert (await client.get(f"{url}/health")).status_code == 200
        text = (await client.get(f"{url}/metrics")).text
        # the dropped stream is counted in no finish reason (vLLM has no abort counter); the dropped
        # non-streamed response had finished generating: counted by its own
        assert metric(text, "vllm:request_success_total", finished_reason="abort") == 0
        assert metric(text, "vllm:request_success_total") == 1
        assert metric(text, "vllm:num_requests_running") == 0


async def test_latency_model_shapes_ttft_and_duration() -> None:
    config = fast(
        zero_latency=False, ttft_base_s=0.08, prefill_s_per_token=0.0, itl_s=0.01, num_speculative_tokens=0
    )
    app = create_simulator_app(config)
    async with serving(app) as url, httpx.AsyncClient() as client:
        body = {
            "model": "qwen3-8b",
            "messages": MESSAGES,
            "max_tokens": 10,
            "ignore_eos": True,
            "stream": True,
        }
        started = time.perf_counter()
        first_token_at = None
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            async for chunk in response.aiter_bytes():
                if first_token_at is None and b'"content":"' in chunk.replace(b'"content":""', b""):
                    first_token_at = time.perf_counter() - started
        total = time.perf_counter() - started
        # at least what the model says (an upper bound would time the machine, not the model)
        assert first_token_at is not None and first_token_at >= 0.08
        assert total >= 0.08 + 9 * 0.01
