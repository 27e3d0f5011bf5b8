"""Structured output through the OpenAI SDK: json_schema and json_object content that validates, streamed
and not, after the reasoning of a reasoning model; vLLM's structured_outputs too."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from engines.simulator import Tokenizer

from .sim_support import assert_fits, deliberate, fast, openai_client

PERSON: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "zip": {"type": "string", "format": "uuid"}},
            "required": ["street", "zip"],
            "additionalProperties": False,
        }
    },
    "properties": {
        "name": {"type": "string", "minLength": 3, "maxLength": 40},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 2,
            "maxItems": 4,
            "uniqueItems": True,
        },
        "home": {"$ref": "#/$defs/address"},
        "nickname": {"type": ["string", "null"]},
        "born": {"type": "string", "format": "date"},
        "active": {"const": True},
        "extra": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}]},
    },
    "required": ["name", "age", "score", "role", "tags", "home", "nickname", "born", "active", "extra"],
    "additionalProperties": False,
}
FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {"name": "person", "schema": PERSON, "strict": True},
}
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Describe a person."}]


async def test_json_schema_content_validates_for_every_seed() -> None:
    async with openai_client(fast()) as client:
        contents = []
        for seed in range(10):
            completion = await client.chat.completions.create(
                model="qwen3-8b", messages=ASK, response_format=FORMAT, seed=seed
            )
            content = completion.choices[0].message.content
            assert content is not None
            assert_fits(json.loads(content), PERSON)
            assert completion.choices[0].finish_reason == "stop"
            assert completion.usage is not None
            assert completion.usage.completion_tokens == Tokenizer().count(content)
            contents.append(content)
    assert len(set(contents)) == 10


async def test_stream_reassembles_into_the_same_document() -> None:
    async with openai_client(fast()) as client:
        whole = await client.chat.completions.create(model="qwen3-8b", messages=ASK, response_format=FORMAT)
        stream = await client.chat.completions.create(
            model="qwen3-8b", messages=ASK, response_format=FORMAT, stream=True
        )
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert len([p for p in pieces if p]) > 10  # token by token
    assert "".join(pieces) == whole.choices[0].message.content
    assert_fits(json.loads("".join(pieces)), PERSON)


async def test_json_object_is_a_small_object() -> None:
    async with openai_client(fast()) as client:
        for seed in range(5):
            completion = await client.chat.completions.create(
                model="qwen3-8b", messages=ASK, response_format={"type": "json_object"}, seed=seed
            )
            document = json.loads(completion.choices[0].message.content or "")
            assert isinstance(document, dict) and 1 <= len(document) <= 3


async def test_vllm_structured_outputs_json_and_choice() -> None:
    async with openai_client(fast()) as client:
        by_json = await client.chat.completions.create(
            model="qwen3-8b", messages=ASK, extra_body={"structured_outputs": {"json": PERSON}}
        )
        by_text = await client.chat.completions.create(
            model="qwen3-8b", messages=ASK, extra_body={"structured_outputs": {"json": json.dumps(PERSON)}}
        )
        by_choice = await client.chat.completions.create(
            model="qwen3-8b", messages=ASK, extra_body={"structured_outputs": {"choice": ["yes", "no"]}}
        )
    assert_fits(json.loads(by_json.choices[0].message.content or ""), PERSON)
    assert by_text.choices[0].message.content == by_json.choices[0].message.content
    assert by_choice.choices[0].message.content in ("yes", "no")


async def test_reasoning_model_reasons_before_the_document() -> None:
    async with openai_client(deliberate()) as client:
        completion = await client.chat.completions.create(
            model="qwen3-8b", messages=ASK, response_format=FORMAT
        )
        stream = await client.chat.completions.create(
            model="qwen3-8b", messages=ASK, response_format=FORMAT, stream=True
        )
        kinds = []
        async for chunk in stream:
            delta = chunk.choices[0].delta
            if getattr(delta, "reasoning", None):
                kinds.append("reasoning")
            if delta.content:
                kinds.append("content")
    message = completion.choices[0].message
    assert getattr(message, "reasoning", None)
    assert_fits(json.loads(message.content or ""), PERSON)
    assert kinds[0] == "reasoning" and "reasoning" not in kinds[kinds.index("content") :]


async def test_choices_agree_unless_configured_to_vary() -> None:
    async with openai_client(fast()) as client:
        agreeing = await client.chat.completions.create(
            model="qwen3-8b", messages=ASK, response_format=FORMAT, n=4
        )
    async with openai_client(fast(structured_variation_rate=1.0)) as client:
        varying = await client.chat.completions.create(
            model="qwen3-8b", messages=ASK, response_format=FORMAT, n=4
        )
    assert len({c.message.content for c in agreeing.choices}) == 1
    assert len({c.message.content for c in varying.choices}) == 4
    for choice in varying.choices:
        assert_fits(json.loads(choice.message.content or ""), PERSON)


async def test_max_tokens_cuts_the_document() -> None:
    async with openai_client(fast()) as client:
        whole = await client.chat.completions.create(model="qwen3-8b", messages=ASK, response_format=FORMAT)
        completion = await client.chat.completions.create(
            model="qwen3-8b", messages=ASK, response_format=FORMAT, max_tokens=6
        )
    content = completion.choices[0].message.content or ""
    assert content.startswith("{") and (whole.choices[0].message.content or "").startswith(content)
    assert whole.choices[0].finish_reason == "stop"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 6
    with pytest.raises(json.JSONDecodeError):
        json.loads(completion.choices[0].message.content or "")


async def test_json_schema_without_schema_is_400() -> None:
    async with openai_client(fast()) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="qwen3-8b", messages=ASK, extra_body={"response_format": {"type": "json_schema"}}
            )
    assert caught.value.param == "response_format"
