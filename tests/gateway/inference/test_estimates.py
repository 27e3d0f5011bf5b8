"""Reservations come from the fields the engine honours: a request cannot buy a small reservation with a
field the engine ignores, a batch of prompts reserves for every choice it makes, and an answer nobody bounded
is bounded by what was reserved."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from engines.simulator import profile
from gateway.http.schemas import ChatRequest, CompletionRequest
from gateway.inference.admission import DEFAULT_OUTPUT_TOKENS, estimate_tokens
from gateway.inference.catalog import Offer
from gateway.tiers import Tier
from tests.conftest import StartEngine, StartGateway
from tests.gateway.budgets.test_http import budgets_of, ledger_total
from tests.gateway.keys.test_http import admin, keyed_gateway, new_key

STORY = "Write a long story."
STORY_CHAT: Any = [{"role": "user", "content": STORY}]


def offer(max_model_len: int | None = None, max_output_tokens: int | None = None) -> Offer:
    return Offer("m", Tier.FAST, "fast", "m", max_model_len, "tiergate", None, max_output_tokens)


def test_the_chat_bound_is_the_one_vllm_honours_and_a_batch_makes_a_choice_per_prompt() -> None:
    both = ChatRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 1,
            "max_completion_tokens": 4000,
            "n": 3,
        }
    )
    estimate = estimate_tokens(100, both, offer())
    assert (estimate.output, estimate.n) == (4000, 3)
    batch = CompletionRequest.model_validate(
        {"model": "m", "prompt": ["a", "b", "c", "d"], "max_tokens": 50, "n": 2}
    )
    assert (estimate_tokens(100, batch, offer()).output, estimate_tokens(100, batch, offer()).n) == (50, 8)
    ids = CompletionRequest.model_validate({"model": "m", "prompt": [1, 2, 3], "max_tokens": 50})
    assert estimate_tokens(100, ids, offer()).n == 1  # one prompt given as token ids
    id_batch = CompletionRequest.model_validate({"model": "m", "prompt": [[1, 2], [3]], "max_tokens": 50})
    assert estimate_tokens(100, id_batch, offer()).n == 2
    unbounded = ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert estimate_tokens(400, unbounded, offer(1000)).output == 900  # the context, less the prompt
    assert estimate_tokens(400, unbounded, offer()).output == DEFAULT_OUTPUT_TOKENS
    assert estimate_tokens(400, unbounded, offer(1000, 300)).output == 300  # the model's most
    default = CompletionRequest.model_validate({"model": "m", "prompt": "x", "best_of": 3})
    assert (estimate_tokens(400, default, offer(1000)).output, estimate_tokens(400, default, offer()).n) == (
        16,
        3,
    )


async def _fire(client: openai.AsyncOpenAI, count: int, **body: Any) -> list[Any]:
    async def one() -> Any:
        return await client.completions.create(model="qwen3-8b:fast", prompt=STORY, **body)

    return list(await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True))


def test_a_chat_field_on_completions_buys_no_small_reservation(
    database_url: str, start_gateway: StartGateway, fast_engine: str, tmp_path: Path
) -> None:
    """The outside test's 40 requests against a daily budget of 0.0002 and 20k TPM: before, each reserved
    one token's worth (the engine wrote up to 4,000) and the key was billed 50 times its budget."""
    gateway = keyed_gateway(start_gateway, fast_engine, tmp_path, database_url)
    key = new_key(gateway, limits={"fast": {"tpm": 20_000}})
    budget = admin(gateway, "PUT", f"/keys/{key['id']}/budgets/daily", json={"limit": "0.0002"})
    assert budget.status_code == 200, budget.text

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0) as client:
            mixed = await _fire(client, 40, max_tokens=4000, extra_body={"max_completion_tokens": 1})
            plain = await _fire(client, 40, max_tokens=4000)
            return mixed, plain

    mixed, plain = asyncio.run(scenario())
    for refused in mixed:
        assert isinstance(refused, openai.BadRequestError), refused
        assert refused.code == "unknown_parameter"
        assert refused.param == "max_completion_tokens"
        assert "max_tokens" in refused.message
    for refused in plain:  # 4,000 tokens at the fast price are 800 micros: over the budget of 200
        assert isinstance(refused, openai.RateLimitError), refused
        assert refused.code == "insufficient_quota"
    daily = budgets_of(gateway, "acme")[("key", "daily")]
    assert daily["spent_micros"] == 0 and daily["reserved_micros"] == 0
    total, rows = asyncio.run(ledger_total(database_url, "acme"))
    assert (total, rows) == (0, [])


def test_a_batch_of_prompts_reserves_for_every_choice(
    start_gateway: StartGateway, fast_engine: str, tmp_path: Path
) -> None:
    gateway = keyed_gateway(start_gateway, fast_engine, tmp_path)
    key = new_key(gateway)
    # room for one 400-token answer at 0.20 per 1M tokens (80 micros and the prompt), not for ten
    admin(gateway, "PUT", f"/keys/{key['id']}/budgets/daily", json={"limit": "0.0002"})
    with openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0) as client:
        one = client.completions.create(model="qwen3-8b:fast", prompt=STORY, max_tokens=400)
        assert len(one.choices) == 1
        with pytest.raises(openai.RateLimitError) as refused:
            client.completions.create(model="qwen3-8b:fast", prompt=[STORY] * 10, max_tokens=400)
        assert refused.value.code == "insufficient_quota"
        with pytest.raises(openai.RateLimitError):  # n choices of one prompt, likewise
            client.completions.create(model="qwen3-8b:fast", prompt=STORY, max_tokens=400, n=10)


def test_an_unbounded_answer_is_bounded_by_what_was_reserved(
    start_engine: StartEngine, start_gateway: StartGateway
) -> None:
    """llama-3.1-8b has no max_model_len in the test catalog: without a bound from the request, the engine
    would write up to its own context while the gateway reserved DEFAULT_OUTPUT_TOKENS: it is told that
    bound."""
    long_writer = start_engine(profile("fast", zero_latency=True, output_tokens_range=(5000, 5000)))
    gateway = start_gateway([long_writer], [long_writer])
    with openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as client:
        chat = client.chat.completions.create(
            model="llama-3.1-8b", messages=[{"role": "user", "content": STORY}]
        )
        assert chat.usage is not None and chat.usage.completion_tokens == DEFAULT_OUTPUT_TOKENS
        assert chat.choices[0].finish_reason == "length"
        # completions without max_tokens: 16 tokens, as OpenAI and vLLM, also on an engine that would not
        text = client.completions.create(model="llama-3.1-8b", prompt=STORY)
        assert text.usage is not None and text.usage.completion_tokens == 16
        text = client.completions.create(model="qwen3-8b:fast", prompt=STORY)
        assert text.usage is not None and text.usage.completion_tokens == 16
        # a bound the client gave is the client's
        short = client.chat.completions.create(
            model="llama-3.1-8b", messages=[{"role": "user", "content": STORY}], max_tokens=7
        )
        assert short.usage is not None and short.usage.completion_tokens == 7


@pytest.mark.parametrize(
    "body",
    [
        {"max_completion_tokens": "abc"},
        {"max_completion_tokens": [None]},
        {"max_completion_tokens": {"x": 1}},
        {"max_completion_tokens": 5},
    ],
)
def test_max_completion_tokens_on_completions_is_a_400_naming_it(body: dict[str, Any], gateway: Any) -> None:
    response = httpx.post(gateway.v1 + "/completions", json={"model": "qwen3-8b", "prompt": STORY, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unknown_parameter", "max_completion_tokens")


def test_a_models_max_output_bounds_what_is_asked_sent_and_reserved(
    start_engine: StartEngine, start_gateway: StartGateway, tmp_path: Path
) -> None:
    long_writer = start_engine(profile("fast", zero_latency=True, output_tokens_range=(5000, 5000)))
    gateway = keyed_gateway(
        start_gateway, long_writer, tmp_path, model_settings={"qwen3-8b": {"max_output_tokens": 300}}
    )
    key = new_key(gateway, limits={"fast": {"tpm": 200_000}})
    with openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model="qwen3-8b:fast", messages=[{"role": "user", "content": STORY}], max_tokens=301
            )
        assert (refused.value.code, refused.value.param) == ("invalid_value", "max_tokens")
        assert "at most 300" in refused.value.message
        raw = client.chat.completions.with_raw_response.create(model="qwen3-8b:fast", messages=STORY_CHAT)
        reply = raw.parse()
        assert reply.usage is not None and reply.usage.completion_tokens == 300  # sent the model's bound
        reserved = 200_000 - int(raw.headers["x-ratelimit-remaining-tokens"])
        assert 300 < reserved < 400  # the bound and the prompt, not the 32,768-token context
        card = client.models.retrieve("qwen3-8b:fast")
        assert (card.model_extra or {})["max_output_tokens"] == 300
