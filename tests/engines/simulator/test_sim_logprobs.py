"""Logprobs through the OpenAI SDK: vLLM's shapes on chat and text completions, streamed and not, the
reasoning tokens included, and a confidence that the config or a header sets."""

from __future__ import annotations

import math
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionTokenLogprob

from engines.simulator import Tokenizer

from .sim_support import deliberate, fast, openai_client

ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Explain speculative decoding."}]


def _check_tokens(entries: list[ChatCompletionTokenLogprob], top: int) -> None:
    for entry in entries:
        assert entry.logprob <= 0
        assert entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == top
        if top:
            # The sampled token first (vLLM's order); here it is also the likeliest, so the list is sorted.
            assert (entry.top_logprobs[0].token, entry.top_logprobs[0].logprob) == (
                entry.token,
                entry.logprob,
            )
            values = [t.logprob for t in entry.top_logprobs]
            assert values == sorted(values, reverse=True)
            assert len({t.token for t in entry.top_logprobs}) == top
            assert sum(math.exp(v) for v in values) <= 1.0 + 1e-9


@pytest.mark.parametrize("top", [0, 1, 5, 20])
async def test_chat_logprobs_cover_every_content_token(top: int) -> None:
    async with openai_client(fast()) as client:
        completion = await client.chat.completions.create(
            model="qwen3-8b", messages=ASK, max_tokens=60, logprobs=True, top_logprobs=top
        )
    choice = completion.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    _check_tokens(entries, top)
    assert "".join(e.token for e in entries) == choice.message.content
    assert completion.usage is not None and len(entries) == completion.usage.completion_tokens
    assert [e.token.strip() for e in entries] == Tokenizer().tokenize(choice.message.content or "")


async def test_streamed_logprobs_ride_with_their_tokens_and_match_the_whole_response() -> None:
    kwargs: dict[str, Any] = {"messages": ASK, "max_tokens": 80, "logprobs": True, "top_logprobs": 3}
    async with openai_client(deliberate()) as client:
        whole = await client.chat.completions.create(model="qwen3-8b", **kwargs)
        stream = await client.chat.completions.create(model="qwen3-8b", stream=True, **kwargs)
        streamed: list[ChatCompletionTokenLogprob] = []
        async for chunk in stream:
            (choice,) = chunk.choices
            text = (getattr(choice.delta, "reasoning", None) or "") + (choice.delta.content or "")
            if choice.logprobs is None:
                assert not text  # the role chunk
                continue
            assert choice.logprobs.content is not None
            assert "".join(e.token for e in choice.logprobs.content) == text
            streamed += choice.logprobs.content
    assert whole.choices[0].logprobs is not None and whole.choices[0].logprobs.content is not None
    assert streamed == whole.choices[0].logprobs.content
    # As vLLM: the reasoning tokens are in logprobs too, before the content's.
    message = whole.choices[0].message
    reasoning = getattr(message, "reasoning", None)
    assert isinstance(reasoning, str) and reasoning
    assert "".join(e.token for e in streamed) == reasoning + (message.content or "")


async def test_logprobs_are_deterministic_and_a_lower_max_tokens_gets_a_prefix() -> None:
    kwargs: dict[str, Any] = {"messages": ASK, "logprobs": True, "top_logprobs": 2, "seed": 3}
    async with openai_client(fast()) as client:
        long = await client.chat.completions.create(model="qwen3-8b", max_tokens=50, **kwargs)
        again = await client.chat.completions.create(model="qwen3-8b", max_tokens=50, **kwargs)
        short = await client.chat.completions.create(model="qwen3-8b", max_tokens=20, **kwargs)
        plain = await client.chat.completions.create(model="qwen3-8b", max_tokens=50, messages=ASK, seed=3)
    # Asking for logprobs changes nothing else; not asking gets none.
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == long.choices[0].message.content
    assert long.choices[0].logprobs == again.choices[0].logprobs
    assert long.choices[0].logprobs is not None and long.choices[0].logprobs.content is not None
    assert short.choices[0].logprobs is not None
    assert short.choices[0].logprobs.content == long.choices[0].logprobs.content[:20]


async def _mean_logprob(client: openai.AsyncOpenAI, **extra: Any) -> float:
    completion = await client.chat.completions.create(
        model="qwen3-8b",
        messages=ASK,
        max_tokens=400,
        logprobs=True,
        extra_body={"ignore_eos": True},
        **extra,
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None and len(logprobs.content) == 400
    return float(sum(e.logprob for e in logprobs.content) / len(logprobs.content))


async def test_confidence_follows_the_config_and_the_header() -> None:
    async with openai_client(fast(logprob_mean=-0.05)) as client:
        sure = await _mean_logprob(client)
        unsure = await _mean_logprob(client, extra_headers={"x-sim-fault": "logprob-mean=-3"})
    async with openai_client(fast(logprob_mean=-2.0)) as client:
        low = await _mean_logprob(client)
    assert -0.07 < sure < -0.035
    assert -2.6 < low < -1.4
    assert -3.9 < unsure < -2.1


async def test_completion_logprobs_in_vllm_shape_streamed_and_not() -> None:
    async with openai_client(fast()) as client:
        whole = await client.completions.create(
            model="qwen3-8b", prompt="Once upon a time", max_tokens=40, logprobs=3
        )
        stream = await client.completions.create(
            model="qwen3-8b", prompt="Once upon a time", max_tokens=40, logprobs=3, stream=True
        )
        chunks = [chunk.choices[0] async for chunk in stream]
        zero = await client.completions.create(
            model="qwen3-8b", prompt="Once upon a time", max_tokens=5, logprobs=0
        )
    (choice,) = whole.choices
    logprobs = choice.logprobs
    assert logprobs is not None and logprobs.tokens is not None and logprobs.text_offset is not None
    assert logprobs.token_logprobs is not None and logprobs.top_logprobs is not None
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset == [len("".join(logprobs.tokens[:i])) for i in range(len(logprobs.tokens))]
    for token, value, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert len(top) == 3 and top[token] == value and value == max(top.values())
    # Streamed: the same tokens and offsets, chunk by chunk.
    streamed_tokens: list[str] = []
    streamed_offsets: list[int] = []
    for chunk in chunks:
        assert chunk.logprobs is not None and chunk.logprobs.tokens is not None
        assert "".join(chunk.logprobs.tokens) == chunk.text
        streamed_tokens += chunk.logprobs.tokens
        streamed_offsets += chunk.logprobs.text_offset or []
    assert (streamed_tokens, streamed_offsets) == (logprobs.tokens, logprobs.text_offset)
    # logprobs=0 still names the sampled token, as vLLM does.
    zero_logprobs = zero.choices[0].logprobs
    assert zero_logprobs is not None and zero_logprobs.top_logprobs is not None
    assert all(len(top) == 1 for top in zero_logprobs.top_logprobs)


async def test_tool_call_markup_tokens_have_logprobs_in_empty_deltas() -> None:
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    kwargs: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Use lookup."}],
        "tools": tools,
        "logprobs": True,
    }
    async with openai_client(fast()) as client:
        whole = await client.chat.completions.create(model="qwen3-8b", **kwargs)
        stream = await client.chat.completions.create(model="qwen3-8b", stream=True, **kwargs)
        chunks = [chunk.choices[0] async for chunk in stream]
    logprobs = whole.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    text = "".join(e.token for e in logprobs.content)  # what was generated, markup and all
    assert text == '<tool_call>\n{"name": "lookup", "arguments": {}}\n</tool_call>'
    assert whole.usage is not None and whole.usage.completion_tokens == Tokenizer().count(text)
    markup_only = [c for c in chunks[1:] if not c.delta.tool_calls and c.finish_reason is None]
    assert markup_only and all(c.logprobs is not None and c.logprobs.content for c in markup_only)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "logprobs"),
        ({"logprobs": True, "top_logprobs": -2}, "top_logprobs"),
    ],
)
async def test_chat_logprob_requests_vllm_refuses_are_400(body: dict[str, Any], param: str) -> None:
    async with openai_client(fast()) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="qwen3-8b", messages=ASK, **body)
        with pytest.raises(openai.BadRequestError) as too_many:
            await client.completions.create(model="qwen3-8b", prompt="Hi", logprobs=21)
    assert caught.value.param == param
    assert too_many.value.param == "logprobs"
    assert "greater than max allowed: 20" in str(too_many.value)
