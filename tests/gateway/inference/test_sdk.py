"""The real OpenAI SDK, sync and async, against the gateway in front of simulated engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from gateway import Outcome, Tier
from tests.chat import user
from tests.conftest import Gateway

MESSAGES = user("Name three prime numbers.")


def assert_cost(extra: dict[str, Any] | None, prompt: int, completion: int) -> None:
    """The OpenRouter-style cost of a fast-tier qwen3-8b request (0.05 in, 0.20 out per 1M tokens)."""
    assert extra is not None
    expected = (prompt * 50_000 + 500_000) // 1_000_000 + (completion * 200_000 + 500_000) // 1_000_000
    assert extra["cost_micros"] == expected == sum(extra["cost_details"]["amounts_micros"].values())
    assert extra["cost"] == pytest.approx(expected / 1_000_000, abs=1e-12)  # a JSON number on the wire
    assert extra["cost_details"]["currency"] == "USD" and extra["cost_details"]["rated_tier"] == "fast"


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key="test", max_retries=0)


@pytest.fixture
async def aclient(gateway: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="test", max_retries=0) as client:
        yield client


def test_chat_completion(client: openai.OpenAI, gateway: Gateway) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="qwen3-8b:fast", messages=MESSAGES, max_tokens=12
    )
    completion = raw.parse()
    assert raw.headers["x-tiergate-tier"] == "fast"
    assert completion.model == "qwen3-8b:fast"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    exchange = gateway.recorder.wait_for(raw.headers["x-request-id"])
    assert exchange.outcome is Outcome.OK and exchange.tier is Tier.FAST and not exchange.streamed
    assert_cost(usage.model_extra, usage.prompt_tokens, usage.completion_tokens)
    assert exchange.usage is not None and exchange.usage.completion_tokens == usage.completion_tokens


def test_stream_with_usage(client: openai.OpenAI, gateway: Gateway) -> None:
    stream = client.chat.completions.create(
        model="qwen3-8b",
        messages=MESSAGES,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert text
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    final = usage_chunks[0].usage
    assert final is not None and final.completion_tokens > 0
    assert_cost(final.model_extra, final.prompt_tokens, final.completion_tokens)
    assert all(c.model == "qwen3-8b:fast" for c in chunks)
    assert len([c for c in chunks if c.choices]) > 2  # relayed chunk by chunk, not as one blob


def test_stream_without_usage_still_meters_it(client: openai.OpenAI, gateway: Gateway) -> None:
    raw = client.chat.completions.with_raw_response.create(model="qwen3-8b", messages=MESSAGES, stream=True)
    chunks = list(raw.parse())
    assert chunks and all(c.choices and c.usage is None for c in chunks)
    exchange = gateway.recorder.wait_for(raw.headers["x-request-id"])
    # the gateway asked the engine for usage even though the client did not
    assert exchange.streamed and exchange.outcome is Outcome.OK
    assert exchange.usage is not None and exchange.usage.completion_tokens > 0
    assert exchange.first_token_s is not None and exchange.first_token_s <= exchange.duration_s


async def test_async_client(aclient: openai.AsyncOpenAI) -> None:
    completion = await aclient.chat.completions.create(model="llama-3.1-8b", messages=MESSAGES, max_tokens=8)
    assert completion.choices[0].message.content
    stream = await aclient.chat.completions.create(
        model="llama-3.1-8b:fast", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    pieces = [chunk async for chunk in stream]
    assert pieces[-1].usage is not None and pieces[-1].usage.completion_tokens > 0


def test_deliberate_tier_relays_reasoning(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="qwen3-8b:deliberate", messages=MESSAGES)
    message = raw.parse().choices[0].message
    assert raw.headers["x-tiergate-tier"] == "deliberate"
    assert message.model_extra is not None and message.model_extra.get("reasoning")
    assert message.content

    stream = client.chat.completions.create(model="qwen3-32b", messages=MESSAGES, stream=True)
    kinds = []
    for chunk in stream:
        delta = chunk.choices[0].delta
        extra = delta.model_extra or {}
        if extra.get("reasoning") or extra.get("reasoning_content"):
            kinds.append("reasoning")
        elif delta.content:
            kinds.append("content")
    assert "reasoning" in kinds and "content" in kinds
    assert kinds.index("content") > kinds.index("reasoning")  # reasoning first, then the answer


@pytest.mark.parametrize(
    ("model", "headers", "effort", "tier"),
    [
        ("qwen3-8b", {}, None, "fast"),  # the model's default
        ("qwen3-8b", {"x-tiergate-tier": "deliberate"}, None, "deliberate"),  # the header
        ("qwen3-8b:fast", {"x-tiergate-tier": "deliberate"}, None, "fast"),  # the suffix beats the header
        ("qwen3-8b", {}, "high", "deliberate"),  # reasoning_effort through the default map
        ("qwen3-8b", {}, "low", "fast"),
        ("llama-3.1-8b", {}, "high", "fast"),  # effort is a hint: a fast-only model stays fast
        ("qwen3-32b", {}, None, "deliberate"),  # a model offered in one tier only
    ],
)
def test_tier_resolution(
    client: openai.OpenAI, model: str, headers: dict[str, str], effort: Any, tier: str
) -> None:
    kwargs: dict[str, Any] = {"reasoning_effort": effort} if effort else {}
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, max_tokens=4, extra_headers=headers, **kwargs
    )
    assert raw.headers["x-tiergate-tier"] == tier
    assert raw.parse().model == f"{model.split(':')[0]}:{tier}"


def test_unknown_fields_pass_through_to_the_engine(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="qwen3-8b:deliberate", messages=MESSAGES)
    capped = client.chat.completions.create(
        model="qwen3-8b:deliberate",
        messages=MESSAGES,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},  # vLLM-only: the engine must see it
    )
    assert (plain.choices[0].message.model_extra or {}).get("reasoning")
    assert not (capped.choices[0].message.model_extra or {}).get("reasoning")


def test_legacy_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="qwen3-8b", prompt="Once upon a time", max_tokens=10)
    assert completion.choices[0].text and completion.model == "qwen3-8b:fast"
    stream = client.completions.create(
        model="qwen3-8b",
        prompt="Once upon a time",
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert chunks[-1].usage is not None


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert sorted(ids) == sorted(
        [
            "qwen3-8b:fast",
            "qwen3-8b:deliberate",
            "qwen3-8b:auto",  # listed where auto has a choice: the model is offered in two tiers
            "llama-3.1-8b:fast",
            "qwen3-32b:deliberate",
        ]
    )
    card = client.models.retrieve("qwen3-8b:deliberate")
    assert card.model_extra is not None and card.model_extra["tier"] == "deliberate"
    auto = client.models.retrieve("qwen3-8b:auto")
    assert (auto.id, auto.owned_by) == ("qwen3-8b:auto", "tiergate") and auto.model_extra is not None
    assert (auto.model_extra["tier"], auto.model_extra["tiers"]) == ("auto", ["fast", "deliberate"])
    assert auto.model_extra["max_model_len"] == 32768
    bare = client.models.retrieve("qwen3-8b")  # what a request for the bare id gets: the default tier
    assert bare.id == "qwen3-8b" and bare.model_extra is not None
    assert (bare.model_extra["tier"], bare.model_extra["default_tier"]) == ("fast", True)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("qwen3-8b:turbo")


@pytest.mark.parametrize(
    "model",
    [
        *("qwen3-8b", "qwen3-8b:fast", "qwen3-8b:deliberate", "qwen3-8b:auto"),
        *("llama-3.1-8b", "llama-3.1-8b:auto", "qwen3-32b", "qwen3-32b:auto"),
        *("llama-3.1-8b:deliberate", "qwen3-8b:turbo", "qwen3-8b:AUTO", "gpt-9", "gpt-9:auto", ":auto"),
    ],
)
def test_retrieve_answers_for_every_id_chat_accepts(client: openai.OpenAI, model: str) -> None:
    try:
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=1)
        accepted = True
    except (openai.NotFoundError, openai.BadRequestError):
        accepted = False
    try:
        card = client.models.retrieve(model)
    except openai.NotFoundError:
        assert not accepted, f"chat accepts {model!r} but GET /v1/models/{model} is 404"
    else:
        assert accepted, f"GET /v1/models/{model} answers but chat refuses it"
        assert card.id == model and card.model_extra is not None
        assert card.model_extra["root"] == model.partition(":")[0]


def test_request_id_is_echoed_or_created(gateway: Gateway) -> None:
    body = {"model": "qwen3-8b", "messages": MESSAGES, "max_tokens": 2}
    mine = httpx.post(gateway.v1 + "/chat/completions", json=body, headers={"x-request-id": "my-trace-42"})
    again = httpx.post(gateway.v1 + "/chat/completions", json=body, headers={"x-request-id": "my-trace-42"})
    assert mine.headers["x-request-id"] == again.headers["x-request-id"] == "my-trace-42"
    # the client's id is echoed for its tracing, but each request keeps a gateway id of its own
    assert mine.headers["x-tiergate-request-id"] != again.headers["x-tiergate-request-id"]
    for response in (mine, again):
        gateway.recorder.wait_for(response.headers["x-tiergate-request-id"])
    fresh = httpx.post(gateway.v1 + "/chat/completions", json=body)
    assert fresh.headers["x-request-id"].startswith("req_") and len(fresh.headers["x-request-id"]) > 20
    hostile = httpx.post(gateway.v1 + "/chat/completions", json=body, headers={"x-request-id": "a b\tc"})
    assert hostile.headers["x-request-id"].startswith("req_")  # not echoed: not a sane token
    missing = httpx.get(gateway.url + "/nowhere")
    assert missing.status_code == 404 and missing.headers["x-request-id"]
