"""The whole chat surface on the deliberate tier, through the OpenAI SDK with the README's key: tools,
structured output, logprobs, n, stop and seed are honoured - voted on where several samples run - and
what the tier cannot honour is a 400 naming the parameter, never a silent drop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import StartGateway
from tests.gateway.deliberation.test_admission import README_LIMITS, engine
from tests.gateway.deliberation.test_http import depth_of, extra
from tests.gateway.keys.test_http import keyed_gateway, new_key

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
ASK: Any = [{"role": "user", "content": "Should I take an umbrella in Paris? Use get_weather."}]
PERSON: Any = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    },
}


def customer_sdk(start_gateway: StartGateway, url: str, tmp_path: Path, **deliberation: Any) -> openai.OpenAI:
    gateway = keyed_gateway(start_gateway, url, tmp_path, deliberation=deliberation)
    key = new_key(gateway, limits={"fast": README_LIMITS, "deliberate": README_LIMITS})
    return openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0)


@pytest.fixture
def sdk(start_gateway: StartGateway, tmp_path: Path) -> Iterator[openai.OpenAI]:
    """The README's key on a gateway whose qwen3-8b deliberates with the default levels over a reasoning
    model whose samples differ in their arguments and JSON a quarter of the time."""
    # reasoning above the high effort's floor (1024): five samples come from one call, no extension
    with engine(reasoning_tokens_range=(1100, 1200), structured_variation_rate=0.25) as url:
        client = customer_sdk(start_gateway, url, tmp_path)
        yield client
        client.close()


def test_a_named_tool_is_called_in_openais_shape(sdk: openai.OpenAI) -> None:
    for effort in ("low", "high"):  # one sample; five samples voted on by function and arguments
        reply = sdk.chat.completions.create(
            model="qwen3-8b:deliberate",
            messages=ASK,
            reasoning_effort=effort,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
        message = reply.choices[0].message
        assert message.tool_calls is not None and len(message.tool_calls) == 1
        call = message.tool_calls[0]
        assert call.type == "function" and call.id and call.function.name == "get_weather"
        arguments = json.loads(call.function.arguments)
        assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("c", "f")
        assert extra(message)["reasoning"]  # the call came after the reasoning, which is kept
        depth = depth_of(reply.usage)
        assert depth["floor_met"] is True
        if effort == "high":
            assert depth["samples"] == 5 and depth["agreement"] >= 0.4


def test_auto_tool_calls_stream_and_finish_as_the_engine_says(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="qwen3-8b:deliberate",
        messages=ASK,
        reasoning_effort="low",
        tools=[WEATHER],
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for fragment in choice.delta.tool_calls or ():
                call = calls.setdefault(fragment.index, {"name": "", "arguments": ""})
                if fragment.function is not None:
                    call["name"] += fragment.function.name or ""
                    call["arguments"] += fragment.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [call["name"] for call in calls.values()] == ["get_weather"]
    assert "city" in json.loads(calls[0]["arguments"])


def test_structured_output_validates_and_is_voted_as_canonical_json(sdk: openai.OpenAI) -> None:
    for effort in ("low", "high"):
        reply = sdk.chat.completions.create(
            model="qwen3-8b:deliberate",
            messages=[{"role": "user", "content": "Make up a person."}],
            reasoning_effort=effort,
            response_format=PERSON,
        )
        person = json.loads(reply.choices[0].message.content or "")
        assert set(person) == {"name", "age"} and isinstance(person["age"], int) and person["age"] >= 0
        if effort == "high":
            assert depth_of(reply.usage)["agreement"] >= 0.4  # canonical JSON compared, not raw text


def test_logprobs_are_the_delivered_answers(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(
        model="qwen3-8b:deliberate",
        messages=[{"role": "user", "content": "What is 2+2?"}],
        reasoning_effort="low",
        logprobs=True,
        top_logprobs=3,
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    tokens = choice.logprobs.content
    assert "".join(token.token for token in tokens).strip() == (choice.message.content or "").strip()
    assert all(token.logprob <= 0 and len(token.top_logprobs) == 3 for token in tokens)
    streamed = sdk.chat.completions.create(
        model="qwen3-8b:deliberate",
        messages=[{"role": "user", "content": "What is 2+2?"}],
        reasoning_effort="low",
        logprobs=True,
        stream=True,
    )
    entries = [
        entry for chunk in streamed for c in chunk.choices if c.logprobs for entry in c.logprobs.content or ()
    ]
    assert entries and all(entry.logprob <= 0 for entry in entries)


def test_n_gives_independent_deliberations_each_reserved_and_metered(sdk: openai.OpenAI) -> None:
    ask: Any = [{"role": "user", "content": "What is 2+2?"}]
    one = sdk.chat.completions.with_raw_response.create(
        model="qwen3-8b:deliberate", messages=ask, reasoning_effort="low"
    )
    one_reserved = README_LIMITS["tpm"] - int(one.headers["x-ratelimit-remaining-tokens"])  # a fresh bucket
    raw = sdk.chat.completions.with_raw_response.create(
        model="qwen3-8b:deliberate", messages=ask, n=2, reasoning_effort="low"
    )
    reply = raw.parse()
    assert [choice.index for choice in reply.choices] == [0, 1]
    assert all(choice.message.content and extra(choice.message)["reasoning"] for choice in reply.choices)
    assert depth_of(reply.usage)["samples"] == 2
    # each choice was reserved for (the bucket also still holds some of the first request's tokens)
    assert README_LIMITS["tpm"] - int(raw.headers["x-ratelimit-remaining-tokens"]) >= 1.9 * one_reserved
    single = one.parse().usage
    assert single is not None and reply.usage is not None
    assert reply.usage.completion_tokens > single.completion_tokens  # both choices metered
    stream = sdk.chat.completions.create(
        model="qwen3-8b:deliberate",
        messages=[{"role": "user", "content": "What is 2+2?"}],
        n=2,
        reasoning_effort="low",
        stream=True,
    )
    content: dict[int, str] = {0: "", 1: ""}
    for chunk in stream:
        for choice in chunk.choices:
            content[choice.index] += choice.delta.content or ""
    assert content[0] and content[1]


def test_stop_and_seed_reach_every_call(sdk: openai.OpenAI) -> None:
    ask: Any = [{"role": "user", "content": "Tell me about rain."}]
    first, again = (
        sdk.chat.completions.create(
            model="qwen3-8b:deliberate",
            messages=ask,
            reasoning_effort="low",
            seed=11,
            user="u-1",
            metadata={"team": "docs"},
        )
        for _ in range(2)
    )
    assert first.choices[0].message.content == again.choices[0].message.content  # seeded: the same answer
    words = (first.choices[0].message.content or "").split()
    stop = words[len(words) // 2]
    cut = sdk.chat.completions.create(
        model="qwen3-8b:deliberate", messages=ask, reasoning_effort="low", seed=11, stop=[stop]
    )
    assert stop not in (cut.choices[0].message.content or "")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("continue_final_message", True),
        ("add_generation_prompt", False),
        ("thinking_token_budget", 100),
        ("chat_template_kwargs", {"enable_thinking": False}),
    ],
)
def test_what_the_tier_sets_itself_is_a_400_naming_it(sdk: openai.OpenAI, field: str, value: Any) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(
            model="qwen3-8b:deliberate", messages=ASK, reasoning_effort="low", extra_body={field: value}
        )
    assert (refused.value.code, refused.value.param) == ("unsupported_parameter", field)
    if field != "continue_final_message":  # (which needs a final assistant message to continue)
        fast = sdk.chat.completions.create(model="qwen3-8b:fast", messages=ASK, extra_body={field: value})
        assert fast.choices  # the fast tier passes it to the engine


def test_a_prompted_model_cannot_think_inside_a_constraint(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    with engine() as url:
        client = customer_sdk(start_gateway, url, tmp_path, reasoning="prompted")
        with client:
            for body in ({"response_format": PERSON}, {"tools": [WEATHER], "tool_choice": "required"}):
                with pytest.raises(openai.BadRequestError) as refused:
                    client.chat.completions.create(
                        model="qwen3-8b:deliberate", messages=ASK, reasoning_effort="low", extra_body=body
                    )
                assert refused.value.code == "unsupported_parameter"
                assert refused.value.param in ("response_format", "tool_choice")


def test_usage_on_every_chunk_is_a_400_naming_it(sdk: openai.OpenAI) -> None:
    """vLLM's continuous_usage_stats: a deliberation counts its usage once, at its end; never dropped."""
    options: Any = {"include_usage": True, "continuous_usage_stats": True}
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(
            model="qwen3-8b:deliberate",
            messages=ASK,
            reasoning_effort="low",
            stream=True,
            stream_options=options,
        )
    assert (refused.value.code, refused.value.param) == (
        "unsupported_parameter",
        "stream_options.continuous_usage_stats",
    )
    fast = sdk.chat.completions.create(
        model="qwen3-8b:fast", messages=ASK, stream=True, stream_options=options
    )
    assert any(chunk.choices and chunk.usage is not None for chunk in fast)  # the engine honours it there
