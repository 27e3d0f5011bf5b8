"""Tool calling through the OpenAI SDK: when the simulator calls, what it calls with, vLLM's shapes for
each tool_choice, streamed and not, with reasoning first on a reasoning model."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from engines.simulator import Tokenizer

from .sim_support import assert_fits, deliberate, fast, openai_client

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "hourly": {"type": "boolean"},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
ORDER: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "item": {
            "type": "object",
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "exclusiveMinimum": 0}},
            "required": ["sku", "qty"],
        }
    },
    "properties": {
        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1, "maxItems": 3},
        "express": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
        "price": {"type": "number", "minimum": 0.5, "maximum": 99.5},
    },
    "required": ["items", "express", "price"],
}
TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "place_order", "parameters": ORDER}},
]
SCHEMAS = {"get_weather": WEATHER, "place_order": ORDER}


def _ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def _calls(completion: ChatCompletion) -> list[ChatCompletionMessageFunctionToolCall]:
    calls = completion.choices[0].message.tool_calls or []
    assert all(isinstance(call, ChatCompletionMessageFunctionToolCall) for call in calls)
    return [call for call in calls if isinstance(call, ChatCompletionMessageFunctionToolCall)]


def _check_arguments(call: ChatCompletionMessageFunctionToolCall) -> dict[str, Any]:
    assert call.id.startswith("chatcmpl-tool-") and len(call.id) == len("chatcmpl-tool-") + 16
    arguments = json.loads(call.function.arguments)
    assert_fits(arguments, SCHEMAS[call.function.name])
    assert isinstance(arguments, dict)
    return arguments


async def test_named_function_is_called_with_arguments_that_fit_its_schema() -> None:
    async with openai_client(fast()) as client:
        completion = await client.chat.completions.create(
            model="qwen3-8b",
            messages=_ask("Nothing here names a tool."),
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "place_order"}},
        )
    (call,) = _calls(completion)
    assert call.function.name == "place_order"
    _check_arguments(call)
    choice = completion.choices[0]
    assert choice.message.content == ""  # vLLM: content "" beside a forced call
    assert choice.finish_reason == "stop"  # vLLM: "stop" for a named function, as OpenAI
    # The call's text is what was generated: the arguments, token for token.
    assert completion.usage is not None
    assert completion.usage.completion_tokens == Tokenizer().count(call.function.arguments)


async def test_required_draws_one_tool_by_seed_and_prompt_deterministically() -> None:
    async with openai_client(fast()) as client:
        chosen: dict[int, tuple[str, str]] = {}
        for seed in range(12):
            completion = await client.chat.completions.create(
                model="qwen3-8b",
                messages=_ask("Do something useful."),
                tools=TOOLS,
                tool_choice="required",
                seed=seed,
            )
            (call,) = _calls(completion)
            _check_arguments(call)
            assert completion.choices[0].finish_reason == "tool_calls"
            assert completion.choices[0].message.content == ""
            chosen[seed] = (call.function.name, call.function.arguments)
        again = await client.chat.completions.create(
            model="qwen3-8b",
            messages=_ask("Do something useful."),
            tools=TOOLS,
            tool_choice="required",
            seed=5,
        )
    assert {name for name, _ in chosen.values()} == {"get_weather", "place_order"}
    assert len({arguments for _, arguments in chosen.values()}) == 12
    (call,) = _calls(again)
    assert (call.function.name, call.function.arguments) == chosen[5]


async def test_auto_calls_the_tools_the_last_user_message_names_and_parallel_false_keeps_one() -> None:
    ask = _ask("Check get_weather for Oslo, then place_order for an umbrella.")
    async with openai_client(fast()) as client:
        both = await client.chat.completions.create(model="qwen3-8b", messages=ask, tools=TOOLS)
        one = await client.chat.completions.create(
            model="qwen3-8b", messages=ask, tools=TOOLS, parallel_tool_calls=False
        )
        required = await client.chat.completions.create(
            model="qwen3-8b", messages=ask, tools=TOOLS, tool_choice="required"
        )
    assert [c.function.name for c in _calls(both)] == ["get_weather", "place_order"]
    assert [c.function.name for c in _calls(required)] == ["get_weather", "place_order"]
    assert [c.function.name for c in _calls(one)] == ["get_weather"]
    for completion in (both, one):
        for call in _calls(completion):
            _check_arguments(call)
        assert completion.choices[0].finish_reason == "tool_calls"
        assert completion.choices[0].message.content is None  # hermes: no text before the call
    assert len({call.id for call in _calls(both)}) == 2
    # The generated text holds both calls in hermes markup, all of it completion tokens.
    assert both.usage is not None and one.usage is not None
    assert both.usage.completion_tokens > one.usage.completion_tokens


async def test_auto_answers_in_text_when_no_tool_is_named_or_after_a_tool_result() -> None:
    asked = "What does get_weather say for Oslo?"
    first_turn: list[ChatCompletionMessageParam] = _ask(asked)
    async with openai_client(fast()) as client:
        plain = await client.chat.completions.create(
            model="qwen3-8b", messages=_ask("Hello there."), tools=TOOLS
        )
        none = await client.chat.completions.create(
            model="qwen3-8b", messages=first_turn, tools=TOOLS, tool_choice="none"
        )
        called = await client.chat.completions.create(model="qwen3-8b", messages=first_turn, tools=TOOLS)
        (call,) = _calls(called)
        second_turn: list[ChatCompletionMessageParam] = [
            *first_turn,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 12}'},
        ]
        answer = await client.chat.completions.create(model="qwen3-8b", messages=second_turn, tools=TOOLS)
    for completion in (plain, none, answer):
        choice = completion.choices[0]
        assert choice.message.tool_calls is None
        assert choice.message.content
        assert choice.finish_reason == "stop"
    # The call and its result are read as prompt: the second turn's prompt holds the first's and more.
    assert called.usage is not None and answer.usage is not None
    assert answer.usage.prompt_tokens > called.usage.prompt_tokens + Tokenizer().count(
        call.function.arguments
    )


async def test_tool_definitions_are_prompt_tokens() -> None:
    async with openai_client(fast()) as client:
        bare = await client.chat.completions.create(model="qwen3-8b", messages=_ask("Hello there."))
        with_tools = await client.chat.completions.create(
            model="qwen3-8b", messages=_ask("Hello there."), tools=TOOLS
        )
    assert bare.usage is not None and with_tools.usage is not None
    listed = "\n".join(json.dumps(tool) for tool in TOOLS)
    # A system message (5 template tokens) holding <tools>, the definitions and </tools>.
    assert with_tools.usage.prompt_tokens == bare.usage.prompt_tokens + 5 + Tokenizer().count(
        f"<tools>\n{listed}\n</tools>"
    )


async def _stream_calls(client: AsyncOpenAI, **kwargs: Any) -> tuple[list[Any], str | None]:
    """The stream's tool-call deltas and its finish reason."""
    stream = await client.chat.completions.create(model="qwen3-8b", stream=True, **kwargs)
    deltas: list[Any] = []
    finish = None
    async for chunk in stream:
        (choice,) = chunk.choices
        deltas += choice.delta.tool_calls or []
        finish = choice.finish_reason or finish
    return deltas, finish


def _reassembled(deltas: list[Any]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for d in deltas:
        if d.id is not None:
            assert d.index not in calls and d.type == "function" and d.function.name
            calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
        calls[d.index]["arguments"] += d.function.arguments or ""
    return calls


@pytest.mark.parametrize(
    ("tool_choice", "finish"),
    [
        ("auto", "tool_calls"),
        ("required", "tool_calls"),
        ({"type": "function", "function": {"name": "get_weather"}}, "stop"),
    ],
)
async def test_streamed_calls_reassemble_into_the_non_streamed_ones(tool_choice: Any, finish: str) -> None:
    kwargs: dict[str, Any] = {
        "messages": _ask("Please get_weather and place_order."),
        "tools": TOOLS,
        "tool_choice": tool_choice,
    }
    async with openai_client(fast()) as client:
        whole = await client.chat.completions.create(model="qwen3-8b", **kwargs)
        deltas, streamed_finish = await _stream_calls(client, **kwargs)
    calls = _reassembled(deltas)
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.function.name, c.function.arguments) for c in _calls(whole)
    ]
    assert streamed_finish == finish == whole.choices[0].finish_reason
    headers = [d for d in deltas if d.id is not None]
    fragments = [d for d in deltas if d.id is None]
    assert len(fragments) > len(headers)  # the arguments arrive token by token
    assert all(d.function.name is None and d.type is None for d in fragments)
    if tool_choice == "auto":  # hermes sends the name alone; the other paths the arguments begun
        assert all(h.function.arguments is None for h in headers)
    else:
        assert all(h.function.arguments for h in headers)


async def test_reasoning_model_reasons_first_then_calls() -> None:
    kwargs: dict[str, Any] = {"messages": _ask("Use get_weather."), "tools": TOOLS}
    async with openai_client(deliberate()) as client:
        whole = await client.chat.completions.create(model="qwen3-8b", **kwargs)
        stream = await client.chat.completions.create(model="qwen3-8b", stream=True, **kwargs)
        order: list[str] = []
        async for chunk in stream:
            delta = chunk.choices[0].delta
            if getattr(delta, "reasoning", None):
                order.append("reasoning")
            if delta.tool_calls:
                order.append("call")
    (call,) = _calls(whole)
    _check_arguments(call)
    reasoning = getattr(whole.choices[0].message, "reasoning", None)
    assert isinstance(reasoning, str) and reasoning
    assert order.index("call") > 0 and "reasoning" not in order[order.index("call") :]
    usage = whole.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == Tokenizer().count(reasoning)
    assert usage.completion_tokens > usage.completion_tokens_details.reasoning_tokens + Tokenizer().count(
        call.function.arguments
    )


async def test_a_call_cut_by_max_tokens_parses_as_vllm_parses_it() -> None:
    async with openai_client(fast()) as client:
        named = await client.chat.completions.create(
            model="qwen3-8b",
            messages=_ask("Anything."),
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=4,
        )
        required = await client.chat.completions.create(
            model="qwen3-8b", messages=_ask("Anything."), tools=TOOLS, tool_choice="required", max_tokens=4
        )
    (call,) = _calls(named)  # named keeps its partial arguments
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.function.arguments)
    assert named.choices[0].finish_reason == "length"
    assert required.choices[0].message.tool_calls is None  # required loses an unparsable array
    assert required.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": []}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ],
)
async def test_tool_requests_vllm_refuses_are_400_naming_the_parameter(
    body: dict[str, Any], param: str
) -> None:
    async with openai_client(fast()) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="qwen3-8b", messages=_ask("Hi."), **body)
    assert caught.value.param == param
