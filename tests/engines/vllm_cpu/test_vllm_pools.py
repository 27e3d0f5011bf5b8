"""Both tiers on real vLLM engines on the CPU: a fast pool on an engine with ngram speculative decoding and
a deliberate pool on one with `--reasoning-parser deepseek_r1`, behind the gateway (in process, through the
OpenAI SDK). See README.md in this folder for the set-up.

Runs with `pytest --real-vllm` (or TIERGATE_VLLM_PYTHON set) and is skipped, loudly, otherwise (conftest.py).
The two engines start at once, once for this module (about 2 minutes on 2 cores), over the tiny random
Llama of make_tiny_model.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.chat import user
from tests.conftest import Gateway
from tests.engines.vllm_cpu.engines import (
    SERVED,
    VLLM,
    EngineSpec,
    make_tiny_model,
    serving_gateway,
    started,
    tiered_settings,
)
from tests.gateway.deliberation.test_http import depth_of, extra, ledger_row

MODEL = "tiny"  # the gateway's public id: fast and deliberate tiers
NGRAM = '{"method":"ngram","num_speculative_tokens":4,"prompt_lookup_max":4}'
DELIBERATION = {"efforts": {"medium": {"floor": 16, "cap": 120, "samples": 1, "max_extensions": 1}}}
MESSAGES = user("Is 1001 a prime number?")
# repeated text: the ngram proposer finds the last few tokens earlier in the context and drafts what followed
REPEATED = "one two three four five six seven eight. " * 4


@dataclass(frozen=True)
class Engines:
    fast: VLLM
    deliberate: VLLM


@dataclass(frozen=True)
class Pools:
    gateway: Gateway
    database_url: str
    sdk: openai.OpenAI


@pytest.fixture(scope="module")
def engines(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    root = tmp_path_factory.mktemp("vllm-pools")
    model = make_tiny_model(vllm_python, root / "tiny-llama")
    specs = [
        # each engine's worker on a core of its own (vLLM binds every one to core 0 by default)
        EngineSpec("fast", ("--speculative-config", NGRAM), (("VLLM_CPU_OMP_THREADS_BIND", "0"),)),
        EngineSpec(
            "deliberate",
            # a tool parser (vLLM 0.32 loads one only with auto tool choice, and refuses a named tool_choice
            # without one); hermes needs no special token in the tokenizer
            (
                "--reasoning-parser",
                "deepseek_r1",
                "--enable-auto-tool-choice",
                "--tool-call-parser",
                "hermes",
            ),
            (("VLLM_CPU_OMP_THREADS_BIND", "1"),),
        ),
    ]
    with started(vllm_python, model, root, specs) as (fast, deliberate):
        yield Engines(fast, deliberate)


@pytest.fixture(scope="module")
def pools(engines: Engines, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pools]:
    urls = {"fast": engines.fast.url, "deliberate": engines.deliberate.url}
    root = tmp_path_factory.mktemp("gateway")
    settings, database_url = tiered_settings(root, MODEL, SERVED, urls, DELIBERATION)
    with serving_gateway(settings) as (gateway, sdk):
        yield Pools(gateway, database_url, sdk)


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric family in Prometheus text, by their sorted labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def check_row(pools: Pools, request_id: str, tier: str, usage: Any) -> None:
    """The ledger row of a request matches the usage the client was told, its cost included."""
    row = ledger_row(pools.database_url, request_id)
    record = row.record
    assert (record.model, record.served_model, record.tier, record.outcome) == (MODEL, SERVED, tier, "ok")
    assert (record.prompt_tokens, record.completion_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    assert not record.estimated
    assert row.charge.total > 0 and extra(usage)["cost_micros"] == row.charge.total


def check_cost(usage: Any) -> None:
    assert usage is not None and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    fields = extra(usage)
    assert float(fields["cost"]) > 0 and fields["cost_micros"] > 0, fields


# -- 1. chat and completions on the fast pool, streamed and not --------------------------------------


def test_fast_chat(pools: Pools, engines: Engines) -> None:
    served = engines.fast.counter("vllm:request_success_total")
    reply = pools.sdk.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, max_tokens=40)
    assert reply.http_response.status_code == 200
    assert reply.headers["x-tiergate-tier"] == "fast"
    answer = reply.parse()
    assert answer.model == f"{MODEL}:fast" and answer.choices[0].finish_reason in ("stop", "length")
    check_cost(answer.usage)
    check_row(pools, reply.headers["x-tiergate-request-id"], "fast", answer.usage)
    assert engines.fast.counter("vllm:request_success_total") == served + 1  # the fast engine served it


def test_fast_chat_streamed(pools: Pools) -> None:
    reply = pools.sdk.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert reply.headers["x-tiergate-tier"] == "fast"
    usage, finish, chunks = None, None, 0
    for chunk in reply.parse():
        chunks += 1
        assert chunk.model == f"{MODEL}:fast"  # the tiered id (docs/tiers.md)
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
    assert chunks > 2 and finish in ("stop", "length")
    check_cost(usage)
    check_row(pools, reply.headers["x-tiergate-request-id"], "fast", usage)


def test_fast_completions(pools: Pools) -> None:
    reply = pools.sdk.completions.with_raw_response.create(model=MODEL, prompt=REPEATED, max_tokens=40)
    assert reply.http_response.status_code == 200
    answer = reply.parse()
    assert answer.model == f"{MODEL}:fast" and answer.choices[0].text
    check_cost(answer.usage)
    check_row(pools, reply.headers["x-tiergate-request-id"], "fast", answer.usage)


def test_fast_completions_streamed(pools: Pools) -> None:
    reply = pools.sdk.completions.with_raw_response.create(
        model=MODEL, prompt=REPEATED, max_tokens=40, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    for chunk in reply.parse():
        if chunk.usage is not None:
            usage = chunk.usage
        text += "".join(choice.text for choice in chunk.choices)
    assert text
    check_cost(usage)
    check_row(pools, reply.headers["x-tiergate-request-id"], "fast", usage)


# -- 2. reasoning on the deliberate pool ------------------------------------------------------------


def test_deliberate_chat_has_reasoning(pools: Pools, engines: Engines) -> None:
    served = engines.deliberate.counter("vllm:request_success_total")
    reply = pools.sdk.chat.completions.with_raw_response.create(
        model=MODEL + ":deliberate", messages=MESSAGES, max_tokens=160, reasoning_effort="medium"
    )
    assert reply.http_response.status_code == 200
    assert reply.headers["x-tiergate-tier"] == "deliberate"
    answer = reply.parse()
    assert answer.model == f"{MODEL}:deliberate"
    reasoning = extra(answer.choices[0].message).get("reasoning")
    assert reasoning, answer  # vLLM's `reasoning`, relayed
    check_cost(answer.usage)
    depth = depth_of(answer.usage)
    assert depth["extensions"] >= 1 or depth["floor_met"], depth
    check_row(pools, reply.headers["x-tiergate-request-id"], "deliberate", answer.usage)
    assert engines.deliberate.counter("vllm:request_success_total") >= served + 1


def test_deliberate_chat_streamed_has_reasoning(pools: Pools) -> None:
    stream = pools.sdk.chat.completions.create(
        model=MODEL + ":deliberate",
        messages=MESSAGES,
        max_tokens=160,
        stream=True,
        stream_options={"include_usage": True},
    )
    reasoning, usage = "", None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning") or ""
    assert reasoning
    check_cost(usage)


def test_deliberate_named_tool_call(pools: Pools) -> None:
    """A named function on the deliberate tier, on real vLLM: the engine writes the call after the reasoning
    (ended by the cap's thinking_token_budget) and streams it as tool-call fragments, which the gateway
    delivers in OpenAI's shape - streamed and not - and bills. (The tiny random model's arguments are JSON,
    vLLM's constrained decoding sees to that, but not the schema's object: seen "false" and "null".)"""
    weather: Any = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    named: Any = {"type": "function", "function": {"name": "get_weather"}}
    ask: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    raw = pools.sdk.chat.completions.with_raw_response.create(
        model=MODEL + ":deliberate", messages=ask, max_tokens=200, tools=[weather], tool_choice=named
    )
    answer = raw.parse()
    calls = answer.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1, answer
    call = calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    json.loads(call.function.arguments)  # JSON, put together from the engine's fragments
    assert extra(answer.choices[0].message).get("reasoning")  # the reasoning came first
    check_cost(answer.usage)
    check_row(pools, raw.headers["x-tiergate-request-id"], "deliberate", answer.usage)
    arguments, name = "", ""
    for chunk in pools.sdk.chat.completions.create(
        model=MODEL + ":deliberate",
        messages=ask,
        max_tokens=200,
        tools=[weather],
        tool_choice=named,
        stream=True,
    ):
        for choice in chunk.choices:
            for fragment in choice.delta.tool_calls or ():
                if fragment.function is not None:
                    name += fragment.function.name or ""
                    arguments += fragment.function.arguments or ""
    assert name == "get_weather"
    json.loads(arguments)


# -- 3. the engines' errors, as OpenAI's -------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "stream"),
    [
        ("fast", False),
        ("fast", True),
        ("deliberate", False),
        ("deliberate", True),
    ],
)
def test_an_over_long_prompt_is_context_length_exceeded(pools: Pools, tier: str, stream: bool) -> None:
    long: Any = [{"role": "user", "content": "Wait, let me think. " * 400}]  # far beyond 512 tokens
    with pytest.raises(openai.BadRequestError) as caught:
        pools.sdk.chat.completions.create(
            model=f"{MODEL}:{tier}", messages=long, max_tokens=100, stream=stream
        )  # (a bound that holds the deliberate tier's floor: the engine must be the one to refuse)
    assert caught.value.status_code == 400
    assert caught.value.code == "context_length_exceeded", caught.value.body


def test_an_over_long_completions_prompt_is_context_length_exceeded(pools: Pools) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        pools.sdk.completions.create(model=MODEL, prompt="Wait, let me think. " * 400, max_tokens=16)
    assert caught.value.status_code == 400
    assert caught.value.code == "context_length_exceeded", caught.value.body


def test_an_unknown_model_is_404(pools: Pools) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        pools.sdk.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=8)
    assert caught.value.status_code == 404


# -- 4. the engines' /metrics, as the gateway reads them ----------------------------------------------


def test_the_gateway_reports_the_fast_pools_spec_decode_acceptance(pools: Pools, engines: Engines) -> None:
    # greedy, the tiny model repeats itself (`</think>` over and over): the ngram proposer finds the last
    # tokens earlier in the context, drafts what followed them, and the engine accepts the drafts
    for _ in range(2):
        pools.sdk.completions.create(model=MODEL, prompt=REPEATED, max_tokens=48, temperature=0)
    drafted = engines.fast.counter("vllm:spec_decode_num_draft_tokens_total")
    accepted = engines.fast.counter("vllm:spec_decode_num_accepted_tokens_total")
    assert drafted > 0, engines.fast.metrics()
    deadline = time.monotonic() + 30  # generous: a scrape every 0.5 s here (1.5 s by default)
    while True:
        text = httpx.get(pools.gateway.url + "/metrics", timeout=10).text
        ratio = samples(text, "tiergate_pool_spec_decode_acceptance_ratio")
        fast = ratio.get((("pool", "fast"),))
        if (fast is not None and fast >= accepted / drafted - 1e-9) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(f"fast engine: {accepted:.0f} of {drafted:.0f} draft tokens accepted; gateway: {ratio}")
    assert fast is not None, text
    assert 0 < fast <= 1
    assert (("pool", "deliberate"),) not in ratio  # no speculative decoding there
    up = samples(text, "tiergate_replica_up")
    assert up == {
        (("pool", "fast"), ("replica", engines.fast.url)): 1.0,
        (("pool", "deliberate"), ("replica", engines.deliberate.url)): 1.0,
    }
