"""The deliberate tier through the OpenAI SDK against the simulator: the floor, the cap, self-consistency,
streaming, disconnects, and what the ledger records and bills."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from engines.simulator import create_simulator_app, profile
from gateway import create_app
from gateway.database import open_database
from pricing import Ledger, LedgerRow
from tests.chat import user
from tests.conftest import Gateway, Recorder, gateway_settings, wait_ready
from tests.gateway.http.test_relay import wait_until
from tests.prometheus import metric, scrape
from tests.servers import serving

MESSAGES = user("Is 1001 a prime number?")


@contextmanager
def deliberating_gateway(
    engine: dict[str, Any], deliberation: dict[str, Any], tmp_path: Path, base: str = "deliberate"
) -> Iterator[tuple[Gateway, str, str]]:
    """A gateway whose qwen3-8b deliberates as configured, over one simulated engine (the `base` profile with
    `engine` on top); yields the gateway, the engine's URL and the ledger's database URL."""
    database_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    config = profile(base, **{"zero_latency": True, **engine})
    with serving(create_simulator_app(config)) as url:
        recorder = Recorder()
        settings = gateway_settings(
            [url],
            [url],
            deliberation=deliberation,
            database={"url": database_url},
            ledger={"journal_dir": str(tmp_path / "journal")},
        )
        with serving(create_app(settings, sinks=[recorder])) as gateway_url:
            wait_ready(gateway_url)
            yield Gateway(gateway_url, recorder), url, database_url


@pytest.fixture
def client() -> Iterator[list[openai.OpenAI]]:
    made: list[openai.OpenAI] = []
    yield made
    for sdk in made:
        sdk.close()


def sdk_for(gateway: Gateway, clients: list[openai.OpenAI]) -> openai.OpenAI:
    clients.append(openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0))
    return clients[-1]


def ledger_row(database_url: str, request_id: str, timeout_s: float = 60.0) -> LedgerRow:
    """The request's ledger row, waited for under a generous deadline (the journal drains into the ledger
    on its own clock; a cut request's row is written once the gateway has counted it)."""

    async def read() -> LedgerRow | None:
        db = await open_database(database_url)
        try:
            return await Ledger(db).get(request_id)
        finally:
            await db.aclose()

    deadline = time.monotonic() + timeout_s
    while (row := asyncio.run(read())) is None:
        assert time.monotonic() < deadline, f"no ledger row for {request_id} within {timeout_s} s"
        time.sleep(0.05)
    return row


def extra(model: Any) -> dict[str, Any]:
    """The fields an SDK object got beyond OpenAI's own (`reasoning`, `reasoning_depth`, `cost`...)."""
    assert model is not None and model.model_extra is not None
    fields: dict[str, Any] = model.model_extra
    return fields


def depth_of(usage: Any) -> dict[str, Any]:
    depth: dict[str, Any] = extra(usage)["reasoning_depth"]
    return depth


def test_a_model_that_stops_early_is_extended_to_the_floor(
    tmp_path: Path, client: list[openai.OpenAI]
) -> None:
    efforts = {"medium": {"floor": 150, "samples": 1, "max_extensions": 8}}
    with deliberating_gateway(
        {"reasoning_tokens_range": (30, 40), "short_reasoning_rate": 0.0}, {"efforts": efforts}, tmp_path
    ) as (gateway, _, database_url):
        reply = sdk_for(gateway, client).chat.completions.with_raw_response.create(
            model="qwen3-8b:deliberate", messages=MESSAGES
        )
        answer = reply.parse()
        depth = depth_of(answer.usage)
        assert depth["floor"] == 150 and depth["floor_met"] is True
        assert 150 <= depth["reasoning_tokens"] < 150 + 40
        assert 4 <= depth["extensions"] <= 5  # 30-40 tokens a call: 4 or 5 continuations reach 150
        reasoning = extra(answer.choices[0].message)["reasoning"]
        assert reasoning.count("\nWait") == depth["extensions"]  # the extensions, spliced in
        assert answer.choices[0].message.content
        usage = answer.usage
        assert usage is not None and usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == depth["reasoning_tokens"]
        assert reply.headers["x-tiergate-tier"] == "deliberate"
        assert answer.model == "qwen3-8b:deliberate"
        row = ledger_row(database_url, reply.headers["x-tiergate-request-id"])
        assert (row.record.depth.extensions, row.record.depth.floor_met) == (depth["extensions"], True)
        assert row.record.reasoning_tokens == depth["reasoning_tokens"]
        assert row.charge.rated_tier == "deliberate"
        assert "depth_premium" in {line.kind for line in row.charge.lines}
        assert extra(usage)["cost_micros"] == row.charge.total


def test_a_missed_floor_is_billed_at_fast_prices(tmp_path: Path, client: list[openai.OpenAI]) -> None:
    efforts = {"medium": {"floor": 5000, "samples": 1, "max_extensions": 1}}
    with deliberating_gateway(
        {"reasoning_tokens_range": (30, 40), "short_reasoning_rate": 0.0}, {"efforts": efforts}, tmp_path
    ) as (gateway, _, database_url):
        reply = sdk_for(gateway, client).chat.completions.with_raw_response.create(
            model="qwen3-8b:deliberate", messages=MESSAGES
        )
        answer = reply.parse()
        depth = depth_of(answer.usage)
        assert (depth["floor_met"], depth["extensions"]) == (False, 1)
        details = extra(answer.usage)["cost_details"]
        assert details["rated_tier"] == "fast"
        assert "depth_premium" not in details["amounts_micros"]
        row = ledger_row(database_url, reply.headers["x-tiergate-request-id"])
        assert (row.charge.rated_tier, row.record.depth.floor_met) == ("fast", False)


@pytest.mark.parametrize("engine_caps", [True, False])
def test_the_cap_is_enforced_by_the_engine_or_the_gateway(
    engine_caps: bool, tmp_path: Path, client: list[openai.OpenAI]
) -> None:
    efforts = {"medium": {"floor": 0, "cap": 120, "samples": 1}}
    settings = {"efforts": efforts, "engine_caps_thinking": engine_caps}
    with deliberating_gateway(
        {"reasoning_tokens_range": (600, 700), "short_reasoning_rate": 0.0}, settings, tmp_path
    ) as (gateway, _, _):
        answer = sdk_for(gateway, client).chat.completions.create(
            model="qwen3-8b:deliberate", messages=MESSAGES
        )
        depth = depth_of(answer.usage)
        assert depth["cap"] == 120
        # the gateway stops its stream after the delta that reached the cap: a token or two over at most
        assert 100 <= depth["reasoning_tokens"] <= 122
        assert answer.choices[0].message.content  # it still answers, from the reasoning it had


def test_self_consistency_votes_over_samples(tmp_path: Path, client: list[openai.OpenAI]) -> None:
    efforts = {"high": {"floor": 0, "samples": 5}}
    with deliberating_gateway(
        {"reasoning_tokens_range": (40, 60)}, {"efforts": efforts, "default_effort": "high"}, tmp_path
    ) as (gateway, _, database_url):
        reply = sdk_for(gateway, client).chat.completions.with_raw_response.create(
            model="qwen3-8b:deliberate", messages=MESSAGES, reasoning_effort="high"
        )
        answer = reply.parse()
        depth = depth_of(answer.usage)
        assert depth["samples"] == 5
        assert depth["agreement"] is not None and 0.0 <= depth["agreement"] <= 1.0
        assert (depth["agreement"] * 5) == pytest.approx(round(depth["agreement"] * 5))
        usage = answer.usage
        assert usage is not None and usage.completion_tokens_details is not None
        # every sample's reasoning is metered, not only the answer's
        assert usage.completion_tokens_details.reasoning_tokens > depth["reasoning_tokens"]
        row = ledger_row(database_url, reply.headers["x-tiergate-request-id"])
        assert (row.record.depth.samples, row.record.depth.agreement) == (5, depth["agreement"])


def test_one_sample_streams_its_reasoning_live_with_extensions_spliced(
    tmp_path: Path, client: list[openai.OpenAI]
) -> None:
    efforts = {"medium": {"floor": 100, "samples": 1, "max_extensions": 8}}
    with deliberating_gateway(
        {"reasoning_tokens_range": (30, 40), "short_reasoning_rate": 0.0}, {"efforts": efforts}, tmp_path
    ) as (gateway, _, _):
        stream = sdk_for(gateway, client).chat.completions.create(
            model="qwen3-8b:deliberate",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        reasoning, content, usage = [], [], None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if extra(choice.delta).get("reasoning"):
                    reasoning.append(extra(choice.delta)["reasoning"])
                if choice.delta.content:
                    content.append(choice.delta.content)
        assert usage is not None
        depth = depth_of(usage)
        assert depth["floor_met"] is True and depth["extensions"] >= 2
        assert len(reasoning) > 50  # token by token, not one piece at the end
        assert "".join(reasoning).count("\nWait") == depth["extensions"]
        assert "".join(content)
        assert extra(usage)["cost_micros"] > 0


def test_several_samples_stream_keepalives_then_the_answer(tmp_path: Path) -> None:
    efforts = {"high": {"floor": 0, "samples": 3}}
    engine = {"zero_latency": False, "ttft_base_s": 0.3, "itl_s": 0.001, "reasoning_tokens_range": (40, 60)}
    settings = {"efforts": efforts, "default_effort": "high", "keepalive_s": 0.05}
    with deliberating_gateway(engine, settings, tmp_path) as (gateway, _, _):
        body = {"model": "qwen3-8b:deliberate", "messages": MESSAGES, "stream": True}
        with httpx.stream("POST", gateway.v1 + "/chat/completions", json=body, timeout=30) as response:
            lines = [line for line in response.iter_lines() if line]
        assert response.status_code == 200
        keepalives = [line for line in lines if line.startswith(":")]
        assert len(keepalives) >= 3
        data = [line for line in lines if line.startswith("data: ")]
        assert data[-1] == "data: [DONE]"
        assert any('"reasoning"' in line for line in data) and any('"content"' in line for line in data)


def test_a_client_that_leaves_cancels_every_sample(tmp_path: Path) -> None:
    efforts = {"high": {"floor": 0, "samples": 4}}
    engine = {
        "zero_latency": False,
        "ttft_base_s": 0.05,
        "itl_s": 0.02,
        "reasoning_tokens_range": (2000, 2100),
    }
    with deliberating_gateway(
        engine, {"efforts": efforts, "default_effort": "high", "keepalive_s": 0.05}, tmp_path
    ) as (gateway, engine_url, database_url):
        body = {"model": "qwen3-8b:deliberate", "messages": MESSAGES, "stream": True}
        with httpx.stream("POST", gateway.v1 + "/chat/completions", json=body, timeout=30) as response:
            request_id = response.headers["x-tiergate-request-id"]
            for line in response.iter_lines():
                if line.startswith(":") or '"reasoning"' in line:
                    break  # the samples are running: leave
        # one engine request carries the 4 samples (n=4): the gateway aborts it, the engine drops all four
        wait_until(
            lambda: metric(scrape(gateway.url), "tiergate_engine_aborts_total", pool="deliberate") == 1
        )
        wait_until(lambda: metric(scrape(engine_url), "vllm:num_requests_running") == 0)
        assert metric(scrape(engine_url), "vllm:request_success_total") == 0
        row = ledger_row(database_url, request_id)
        assert row.record.outcome == "client_disconnected"
        assert row.record.depth.samples == 4
        assert gateway.recorder.wait_for(request_id).status == 499  # its stream had begun: a 200 was sent


HARD = (
    "A train leaves at 3pm going 60 km/h and another at 4pm going 80 km/h on the same track."
    " Step by step, calculate when the second train catches up, and prove your answer."
)


def test_the_auto_tier_picks_by_difficulty_and_says_why(tmp_path: Path, client: list[openai.OpenAI]) -> None:
    with deliberating_gateway({"reasoning_tokens_range": (20, 30)}, {}, tmp_path) as (gateway, _, _):
        sdk = sdk_for(gateway, client)
        easy = sdk.chat.completions.with_raw_response.create(
            model="qwen3-8b:auto", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        assert easy.headers["x-tiergate-tier"] == "fast"
        assert easy.parse().model == "qwen3-8b:fast"
        assert easy.headers["x-tiergate-auto"].startswith("score=")
        hard = sdk.chat.completions.with_raw_response.create(
            model="qwen3-8b:auto", messages=[{"role": "user", "content": HARD}], max_tokens=2000
        )
        assert hard.headers["x-tiergate-tier"] == "deliberate"
        assert "math" in hard.headers["x-tiergate-auto"] and "multi_step" in hard.headers["x-tiergate-auto"]
        assert hard.parse().model == "qwen3-8b:deliberate"
        pushed = sdk.chat.completions.with_raw_response.create(
            model="qwen3-8b",
            messages=[{"role": "user", "content": "hi"}],
            reasoning_effort="high",
            extra_headers={"x-tiergate-tier": "auto"},
            max_tokens=2000,
        )
        assert pushed.headers["x-tiergate-tier"] == "deliberate"
        assert "effort high" in pushed.headers["x-tiergate-auto"]
        # a bound too small for the depth auto chose: the fast tier answers, and the header says why
        short = sdk.chat.completions.with_raw_response.create(
            model="qwen3-8b:auto", messages=[{"role": "user", "content": HARD}], max_tokens=50
        )
        assert short.headers["x-tiergate-tier"] == "fast"
        assert short.headers["x-tiergate-auto"].endswith(",max_tokens")
        assert short.parse().model == "qwen3-8b:fast"
        # a model offered in one tier only: auto is that tier, however easy the request
        only = sdk.chat.completions.with_raw_response.create(
            model="qwen3-32b:auto", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        assert only.headers["x-tiergate-tier"] == "deliberate"
        recorded = gateway.recorder.wait_for(hard.headers["x-tiergate-request-id"])
        assert recorded.tier.value == "deliberate"


def test_a_plain_model_is_prompted_to_think_and_its_text_split(
    tmp_path: Path, client: list[openai.OpenAI]
) -> None:
    """The chain-of-thought pool: a model without a reasoning parser, told to think between delimiters."""
    engine = {"reasoning_tokens_range": (30, 40), "short_reasoning_rate": 0.0}
    deliberation = {"reasoning": "prompted", "efforts": {"medium": {"floor": 100, "max_extensions": 6}}}
    with deliberating_gateway(engine, deliberation, tmp_path, base="plain") as (gateway, _, database_url):
        sdk = sdk_for(gateway, client)
        reply = sdk.chat.completions.with_raw_response.create(model="qwen3-8b:deliberate", messages=MESSAGES)
        answer = reply.parse()
        message = answer.choices[0].message
        assert message.content and "<think>" not in message.content and "</think>" not in message.content
        assert not message.content.startswith("\n")
        reasoning = extra(message)["reasoning"]
        assert (
            "<think>" not in reasoning and reasoning.count("\nWait") == depth_of(answer.usage)["extensions"]
        )
        depth = depth_of(answer.usage)
        assert depth["floor_met"] is True and depth["extensions"] >= 2 and depth["reasoning_tokens"] >= 100
        stream = sdk.chat.completions.create(model="qwen3-8b:deliberate", messages=MESSAGES, stream=True)
        pieces = [extra(c.choices[0].delta).get("reasoning") for c in stream if c.choices]
        assert len([p for p in pieces if p]) > 30  # reasoning streamed as it was split, token by token
        row = ledger_row(database_url, reply.headers["x-tiergate-request-id"])
        assert row.record.reasoning_tokens == depth["reasoning_tokens"] and row.record.depth.floor_met


@pytest.mark.parametrize(("prefill", "max_extensions"), [(True, 0), (False, 2), (False, 0)])
def test_a_plain_model_that_ignores_the_instruction_reasons_in_a_turn_begun_for_it(
    prefill: bool, max_extensions: int, tmp_path: Path, client: list[openai.OpenAI]
) -> None:
    """As SmolLM2-135M-Instruct does on real vLLM: told to think first, it answers at once. A turn begun
    inside `<think>` (prefill_thinking) has it reason from its first token. Without that, only budget forcing
    gets reasoning out of it (its answer thrown away, the reasoning continued from "Wait"); with no extension
    allowed either, there is no depth, and no premium for it."""
    heedless = {
        "follows_thinking_prompt": False,
        "reasoning_tokens_range": (60, 80),
        "short_reasoning_rate": 0.0,
    }
    deliberation = {
        "reasoning": "prompted",
        "prefill_thinking": prefill,
        "efforts": {"medium": {"floor": 50, "max_extensions": max_extensions}},
    }
    with deliberating_gateway(heedless, deliberation, tmp_path, base="plain") as (gateway, _, database_url):
        reply = sdk_for(gateway, client).chat.completions.with_raw_response.create(
            model="qwen3-8b:deliberate", messages=MESSAGES
        )
    answer = reply.parse()
    message = answer.choices[0].message
    reasoning = extra(message).get("reasoning") or ""
    depth = depth_of(answer.usage)
    row = ledger_row(database_url, reply.headers["x-tiergate-request-id"])
    assert message.content and "think>" not in message.content and "<think>" not in reasoning
    assert row.record.reasoning_tokens == depth["reasoning_tokens"]
    if prefill:
        assert depth["extensions"] == 0 and depth["reasoning_tokens"] >= 50 and not reasoning.startswith("\n")
    elif max_extensions:
        assert depth["extensions"] >= 1 and reasoning.startswith("\nWait")
    else:
        assert not reasoning and depth["reasoning_tokens"] == 0
    delivered = depth["reasoning_tokens"] >= 50
    assert depth["floor_met"] is delivered is (prefill or max_extensions > 0)
    assert row.charge.rated_tier == ("deliberate" if delivered else "fast")


def test_an_engine_that_dies_mid_deliberation_still_bills_what_it_generated(
    tmp_path: Path, client: list[openai.OpenAI]
) -> None:
    engine = {"die_after_chunks_rate": 1.0, "die_after_chunks": 30, "reasoning_tokens_range": (200, 300)}
    with deliberating_gateway(engine, {}, tmp_path) as (gateway, _, database_url):
        sdk = sdk_for(gateway, client)
        with pytest.raises(openai.APIStatusError) as failed:
            sdk.chat.completions.with_raw_response.create(model="qwen3-8b:deliberate", messages=MESSAGES)
        assert failed.value.status_code == 502
        request_id = failed.value.response.headers["x-tiergate-request-id"]
        row = ledger_row(database_url, request_id)
        assert row.record.outcome == "engine_failed"
        # billed by the engine's own counts up to the cut (its usage on every chunk): the role chunk and 29
        # tokens, all of them reasoning
        assert row.record.estimated is False
        assert row.record.reasoning_tokens == row.record.completion_tokens == 29
        assert row.record.prompt_tokens > 0
        assert row.record.depth.floor_met is False and row.charge.rated_tier == "fast"
        assert row.charge.total > 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_the_engine_refuses_gets_its_status_streamed_or_not(
    stream: bool, tmp_path: Path, client: list[openai.OpenAI]
) -> None:
    """The stream opens only once the engine has taken the request: its 400 stays a 400."""
    with deliberating_gateway({"max_model_len": 64}, {}, tmp_path) as (gateway, _, database_url):
        long: Any = [{"role": "user", "content": "think about it " * 60}]
        with pytest.raises(openai.BadRequestError) as refused:
            sdk_for(gateway, client).chat.completions.create(
                model="qwen3-8b:deliberate", messages=long, stream=stream
            )
        assert refused.value.code == "context_length_exceeded"
        request_id = refused.value.response.headers["x-tiergate-request-id"]
        row = ledger_row(database_url, request_id)
        assert (row.record.outcome, row.charge.total) == ("rejected", 0)
