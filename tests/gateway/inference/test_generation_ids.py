"""A reply's `id` (`chatcmpl-...`, `cmpl-...`) finds its generation: `GET /v1/generation?id=<reply.id>`
answers for it as for the `x-tiergate-request-id`, streamed or not, fast or deliberate (OpenAI SDK)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from tests.chat import user
from tests.conftest import Gateway, StartGateway

MESSAGES = user("What is 17 * 23? [task: 17 * 23]")
DELIBERATION = {"efforts": {"medium": {"floor": 16, "samples": 1, "max_extensions": 1}}}


def generation(gateway: Gateway, generation_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10  # the journal reaches the ledger within a fraction of a second
    while (found := httpx.get(gateway.v1 + "/generation", params={"id": generation_id})).status_code == 404:
        assert found.json()["error"]["code"] == "generation_not_found"
        assert time.monotonic() < deadline, f"no generation {generation_id}"
        time.sleep(0.05)
    assert found.status_code == 200, found.text
    data: dict[str, Any] = found.json()["data"]
    return data


@pytest.fixture
def gateway(start_gateway: StartGateway, fast_engine: str, deliberate_engine: str) -> Gateway:
    return start_gateway([fast_engine], [deliberate_engine], deliberation=DELIBERATION)


@pytest.mark.parametrize("model", ["qwen3-8b:fast", "qwen3-8b:deliberate", "qwen3-32b:deliberate"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_reply_id_finds_its_generation(gateway: Gateway, model: str, stream: bool) -> None:
    """qwen3-8b:deliberate deliberates (the gateway writes the body), qwen3-32b:deliberate and fast relay the
    engine's answer (the simulator's ids are its own, as TensorRT-LLM's: the gateway replaces them)."""
    client = openai.OpenAI(base_url=gateway.v1, api_key="test", max_retries=0)
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ) as response:
            request_id = response.headers["x-tiergate-request-id"]
            ids = {chunk.id for chunk in response.parse()}
        assert len(ids) == 1, f"one stream, one id: {ids}"
        (reply_id,) = ids
    else:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        request_id, reply_id = raw.headers["x-tiergate-request-id"], raw.parse().id
    client.close()
    assert reply_id == f"chatcmpl-{request_id}"
    by_reply = generation(gateway, reply_id)
    assert by_reply == generation(gateway, request_id)
    assert (by_reply["id"], by_reply["model"], by_reply["streamed"]) == (request_id, model, stream)


@pytest.mark.parametrize("stream", [False, True])
def test_a_completion_reply_id_finds_its_generation(gateway: Gateway, stream: bool) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key="test", max_retries=0)
    if stream:
        with client.completions.with_streaming_response.create(
            model="qwen3-8b", prompt="Once upon a time", max_tokens=8, stream=True
        ) as response:
            request_id = response.headers["x-tiergate-request-id"]
            ids = {chunk.id for chunk in response.parse()}
        assert len(ids) == 1, f"one stream, one id: {ids}"
        (reply_id,) = ids
    else:
        raw = client.completions.with_raw_response.create(
            model="qwen3-8b", prompt="Once upon a time", max_tokens=8
        )
        request_id, reply_id = raw.headers["x-tiergate-request-id"], raw.parse().id
    client.close()
    assert reply_id == f"cmpl-{request_id}"
    assert generation(gateway, reply_id)["id"] == request_id


def test_an_unknown_reply_id_is_404(gateway: Gateway) -> None:
    for unknown in ("chatcmpl-req_0123", "cmpl-", "chatcmpl-", "req_nothing"):
        missing = httpx.get(gateway.v1 + "/generation", params={"id": unknown})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "generation_not_found"
