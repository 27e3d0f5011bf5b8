"""Adaptive self-consistency: the stopping rule, deterministic; and through the OpenAI SDK with the README's
key against the simulator's skill model: a unanimous first wave stops early and bills only what was drawn
(its reservation settled to that), a split vote draws on to the level's maximum, fixed voting draws all."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import openai
import pytest

from engines.simulator import create_simulator_app, profile
from engines.simulator.arithmetic import generate_tasks
from gateway.deliberation.adaptive import keep_probability, settled
from gateway.deliberation.plan import plan_for
from gateway.settings import DeliberationSettings
from tests.chat import user
from tests.conftest import StartGateway
from tests.gateway.deliberation.test_admission import README_LIMITS
from tests.gateway.deliberation.test_http import depth_of, extra, ledger_row
from tests.gateway.http.test_relay import wait_until
from tests.gateway.keys.test_http import keyed_gateway, new_key
from tests.prometheus import metric, scrape
from tests.servers import serving

# --- the stopping rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "left", "keep"),
    [
        (["7", "7"], 3, Fraction(19, 20)),  # the runner-up needs all three: E[(1-p)^3], p ~ Beta(3, 1)
        (["7"], 4, Fraction(4, 5)),
        (["7", "8"], 3, Fraction(2, 5)),  # "8" takes it with 2 of 3 (1/2), a new answer with 3 of 3 (1/10)
        (["8", "7", "7"], 2, Fraction(4, 5)),  # "8" needs both; a new answer would tie 2-2 and lose it
        (["7", "8", "7", "7"], 1, Fraction(1)),  # out of reach: the margin rule
        (["7", "8", "7", "9"], 1, Fraction(1)),  # 2-1-1 and one left: a 2-2 tie goes to "7", given first
        (["7", "8", "9"], 2, Fraction(7, 30)),  # "8" or "9" with both (3/10 each), a new answer (1/6)
        (["8", "7", "7", "9"], 1, Fraction(3, 5)),  # the same tie goes to "8", given first
        (["7", None, "7"], 2, Fraction(1)),  # a sample without an answer is set aside
        ([None, None], 3, Fraction(0)),  # nothing to keep yet
    ],
)
def test_the_keep_probability_is_the_beta_binomial_chance_the_leader_holds(
    answers: list[str | None], left: int, keep: Fraction
) -> None:
    assert keep_probability(answers, left) == keep


def test_the_rule_stops_at_the_confidence_asked_and_always_at_the_maximum() -> None:
    assert settled(["7", "7"], 5, 0.95)  # exactly 0.95: stops
    assert not settled(["7", "7"], 5, 0.96)
    assert settled(["7", "7", "7"], 5, 1.0)  # 3-0 with 2 left: certain
    assert not settled(["7", "8", "9"], 5, 0.5)
    assert settled(["7", "8", "9", "6", "5"], 5, 1.0)  # nothing left to draw
    assert settled([None] * 5, 5, 0.95)


def test_a_higher_confidence_never_stops_sooner() -> None:
    votes: list[list[str | None]] = [
        ["7", "7"],
        ["7", "8", "7"],
        ["7", "7", "8", "7"],
        ["7", "8"],
        ["7", None, "7", "7"],
    ]
    for answers in votes:
        stops = [settled(answers, 7, confidence) for confidence in (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)]
        assert stops == sorted(stops, reverse=True), answers


def test_the_plan_carries_the_levels_adaptive_settings() -> None:
    settings = DeliberationSettings.model_validate(
        {"efforts": {"high": {"samples": 5, "adaptive": True, "wave": 3, "stop_confidence": 0.9}}}
    )
    plan = plan_for(settings, "high", unbounded=8192)
    assert (plan.adaptive, plan.wave, plan.stop_confidence, plan.first_wave) == (True, 3, 0.9, 3)
    fixed = plan_for(DeliberationSettings(), "high", unbounded=8192)
    assert (fixed.adaptive, fixed.first_wave) == (False, 5)


# --- through the gateway ----------------------------------------------------------------------------

TASK = generate_tasks(1, seed=5)[0]
MESSAGES = user(TASK.question + "\nSolve it, and end your reply with 'The answer is N.'")


@contextmanager
def served(
    start_gateway: StartGateway,
    tmp_path: Path,
    database_url: str,
    skill: float,
    settings: dict[str, Any] | None = None,
    engine: dict[str, Any] | None = None,
    **level: Any,
) -> Iterator[tuple[openai.OpenAI, str]]:
    """The README's key on a gateway whose high effort votes over up to 5 samples (floor 100), over a
    simulated reasoning model answering the task right with probability `skill` (wrong answers scattered)."""
    simulated: dict[str, Any] = {
        "zero_latency": True,
        "reasoning_tokens_range": (150, 220),
        "short_reasoning_rate": 0.3,  # some samples stop below the floor: extended, in any wave
        "short_reasoning_range": (20, 60),
        "skill_base": skill,
        "skill_max": skill,
        "skill_tempting_rate": 0.0,
    }
    config = profile("deliberate", **{**simulated, **(engine or {})})
    with serving(create_simulator_app(config)) as engine_url:
        high = {"floor": 100, "cap": 1000, "samples": 5, "max_extensions": 4, **level}
        deliberation = {"efforts": {"high": high}, "default_effort": "high", **(settings or {})}
        gateway = keyed_gateway(start_gateway, engine_url, tmp_path, database_url, deliberation=deliberation)
        key = new_key(gateway, limits={"fast": README_LIMITS, "deliberate": README_LIMITS})
        with openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0) as sdk:
            yield sdk, engine_url


def ask(sdk: openai.OpenAI, seed: int = 7) -> Any:
    return sdk.chat.completions.with_raw_response.create(
        model="qwen3-8b:deliberate", messages=MESSAGES, reasoning_effort="high", seed=seed
    )


def test_a_unanimous_first_wave_stops_early_and_bills_only_what_was_drawn(
    start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    with served(start_gateway, tmp_path, database_url, 1.0, adaptive=True) as (sdk, engine_url):
        raw = ask(sdk)
        answer = raw.parse()
        engine = scrape(engine_url)
        second = ask(sdk, seed=8)  # after the first was settled
    usage = answer.usage
    depth = depth_of(usage)
    assert answer.choices[0].message.content.endswith(f"The answer is {TASK.answer}.")
    assert (depth["samples"], depth["max_samples"], depth["samples_saved"]) == (2, 5, 3)
    assert depth["agreement"] == 1.0 and depth["floor_met"] is True
    # billed: exactly what the engine generated and read, for the two samples drawn (and their extensions)
    assert usage.completion_tokens == metric(engine, "vllm:generation_tokens_total")
    assert usage.prompt_tokens == metric(engine, "vllm:prompt_tokens_total")
    assert metric(engine, "vllm:request_success_total") == 2 + depth["extensions"]  # sequences
    row = ledger_row(database_url, raw.headers["x-tiergate-request-id"])
    assert (row.record.completion_tokens, row.record.depth.samples) == (usage.completion_tokens, 2)
    assert row.charge.total == extra(usage)["cost_micros"] > 0
    # the reservation was for five samples, settled to the two drawn: the next admission finds the rest
    first_left = int(raw.headers["x-ratelimit-remaining-tokens"])
    reserved = README_LIMITS["tpm"] - first_left
    assert reserved > 2 * usage.total_tokens
    assert int(second.headers["x-ratelimit-remaining-tokens"]) >= first_left - usage.total_tokens


def test_a_split_vote_draws_more_waves(
    start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    with served(start_gateway, tmp_path, database_url, 0.0, adaptive=True) as (sdk, engine_url):
        answer = ask(sdk).parse()
        engine = scrape(engine_url)
    depth = depth_of(answer.usage)
    assert depth["samples"] > 2  # the first wave disagreed: more were drawn
    assert depth["samples_saved"] == 5 - depth["samples"]
    assert depth["floor_met"] is True  # every sample drawn, in every wave, reached the floor
    assert answer.usage.completion_tokens == metric(engine, "vllm:generation_tokens_total")
    assert metric(engine, "vllm:request_success_total") == depth["samples"] + depth["extensions"]


def test_fixed_voting_draws_every_sample(
    start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    with served(start_gateway, tmp_path, database_url, 1.0) as (sdk, _):
        depth = depth_of(ask(sdk).parse().usage)
    assert (depth["samples"], depth["samples_saved"], depth["agreement"]) == (5, 0, 1.0)


def test_a_streamed_adaptive_vote_reports_its_waves(
    start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    with served(start_gateway, tmp_path, database_url, 0.0, adaptive=True, wave=1) as (sdk, _):
        stream = sdk.chat.completions.create(
            model="qwen3-8b:deliberate",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            seed=7,
        )
        progress, content, usage = [], "", None
        for chunk in stream:
            tiergate = (chunk.model_extra or {}).get("tiergate") or {}
            if "progress" in tiergate:
                progress.append(tiergate["progress"])
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                content += choice.delta.content or ""
    assert usage is not None and "The answer is" in content
    depth = depth_of(usage)
    waves = [p["wave"] for p in progress]
    assert waves == sorted(waves) and waves[-1] == depth["samples"] > 1  # one sample a wave
    assert [p["samples"] for p in progress][-1] == depth["samples"]
    assert all(p["max_samples"] == 5 for p in progress)


def test_the_levels_adaptive_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="stop_confidence"):
        DeliberationSettings.model_validate({"efforts": {"high": {"adaptive": True, "stop_confidence": 1.5}}})
    with pytest.raises(ValueError, match="wave"):
        DeliberationSettings.model_validate({"efforts": {"high": {"adaptive": True, "wave": 0}}})


def test_each_choice_votes_and_stops_on_its_own(
    start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    with served(start_gateway, tmp_path, database_url, 1.0, adaptive=True) as (sdk, engine_url):
        answer = sdk.chat.completions.create(
            model="qwen3-8b:deliberate", messages=MESSAGES, reasoning_effort="high", seed=7, n=2
        )
        engine = scrape(engine_url)
    depth = depth_of(answer.usage)
    assert (depth["samples"], depth["max_samples"], depth["samples_saved"]) == (4, 10, 6)
    assert [choice.index for choice in answer.choices] == [0, 1]
    assert all((c.message.content or "").endswith(f"The answer is {TASK.answer}.") for c in answer.choices)
    assert answer.usage is not None
    assert answer.usage.completion_tokens == metric(engine, "vllm:generation_tokens_total")


def test_waves_work_where_the_gateway_enforces_the_cap(
    start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    """An engine without thinking_token_budget: each sample of each wave is its own stream, stopped at the
    cap by the gateway and closed for an answer."""
    caps = {"engine_caps_thinking": False}
    with served(start_gateway, tmp_path, database_url, 0.0, caps, adaptive=True, cap=160) as (
        sdk,
        engine_url,
    ):
        answer = ask(sdk, seed=9).parse()
        engine = scrape(engine_url)
    depth = depth_of(answer.usage)
    assert depth["samples"] > 2 and depth["samples_saved"] == 5 - depth["samples"]
    assert depth["floor_met"] is True and depth["reasoning_tokens"] <= 160 + 2  # a delta's worth past it
    assert "The answer is" in (answer.choices[0].message.content or "")
    # every sample's first call and extensions, and a call that closes each capped one for its answer
    assert metric(engine, "vllm:request_success_total") > depth["samples"] + depth["extensions"]


def test_a_client_that_leaves_during_a_later_wave_is_billed_once_for_what_was_drawn(
    start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    slow = {"zero_latency": False, "ttft_base_s": 0.05, "itl_s": 0.005, "reasoning_tokens_range": (300, 350)}
    with served(start_gateway, tmp_path, database_url, 0.0, None, slow, adaptive=True, wave=1) as (
        sdk,
        _engine,
    ):
        raw = sdk.chat.completions.with_streaming_response.create(
            model="qwen3-8b:deliberate", messages=MESSAGES, stream=True, seed=9
        )
        with raw as response:
            request_id = response.headers["x-tiergate-request-id"]
            for chunk in response.parse():
                progress = ((chunk.model_extra or {}).get("tiergate") or {}).get("progress") or {}
                if progress.get("wave") == 2:
                    break  # the second wave is running: leave
        # the engine counts no abort (as vLLM 0.32): the gateway does, once it has closed the engine call
        gateway_url = str(sdk.base_url).rstrip("/").removesuffix("/v1")
        wait_until(lambda: metric(scrape(gateway_url), "tiergate_engine_aborts_total") >= 1)
        row = ledger_row(database_url, request_id)
    assert row.record.outcome == "client_disconnected"
    assert row.record.depth.samples == 2  # the first wave's sample and the second's, cut short
    assert row.record.completion_tokens > 0 and row.charge.total > 0
