"""The depth audit end to end: the OpenAI SDK, a customer's key with real limits, a gateway over a simulated
engine that reasons past the cap, too little, or not at all; each shortfall is in `usage.reasoning_depth`,
on the ledger row (SQLite and PostgreSQL), counted in `tiergate_depth_shortfall_total`, and bills no depth
premium; depth delivered bills it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest

from engines.simulator import create_simulator_app, profile
from pricing import SHORTFALLS
from tests.chat import user
from tests.conftest import Gateway, StartGateway
from tests.gateway.deliberation.test_http import depth_of, extra, ledger_row
from tests.gateway.keys.test_http import keyed_gateway, new_key
from tests.prometheus import metric, scrape
from tests.servers import serving

LIMITS = {"rpm": 600, "tpm": 200_000}  # the README's key
MESSAGES = user("Is 1001 a prime number?")
SHORTFALL = "tiergate_depth_shortfall_total"


@contextmanager
def engine(base: str = "deliberate", **overrides: Any) -> Iterator[str]:
    config = profile(base, **{"zero_latency": True, "short_reasoning_rate": 0.0, **overrides})
    with serving(create_simulator_app(config)) as url:
        yield url


def customer(
    start_gateway: StartGateway, url: str, tmp_path: Path, database_url: str, deliberation: dict[str, Any]
) -> tuple[Gateway, openai.OpenAI]:
    gateway = keyed_gateway(start_gateway, url, tmp_path, database_url, deliberation=deliberation)
    key = new_key(gateway, limits={"fast": LIMITS, "deliberate": LIMITS})
    return gateway, openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0)


def ask(sdk: openai.OpenAI, *, stream: bool) -> tuple[str, Any]:
    """One deliberate request; its id and its `usage` (the stream's last chunk's, when streamed)."""
    if not stream:
        raw = sdk.chat.completions.with_raw_response.create(model="qwen3-8b:deliberate", messages=MESSAGES)
        answer = raw.parse()
        assert answer.choices[0].message.content
        return raw.headers["x-tiergate-request-id"], answer.usage
    raw_stream = sdk.chat.completions.with_raw_response.create(
        model="qwen3-8b:deliberate",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    for chunk in raw_stream.parse():
        if chunk.usage is not None:
            usage = chunk.usage
    assert usage is not None
    return raw_stream.headers["x-tiergate-request-id"], usage


def counted(gateway: Gateway) -> dict[str, float]:
    text = scrape(gateway.url)
    return {
        reason: metric(text, SHORTFALL, pool="deliberate", model="qwen3-8b", reason=reason)
        for reason in SHORTFALLS
    }


def check_billed(
    gateway: Gateway, database_url: str, request_id: str, usage: Any, shortfall: list[str], rated: str
) -> None:
    """The shortfall in the usage, on the ledger row, in the counter; the premium billed only without one."""
    depth = depth_of(usage)
    assert depth["shortfall"] == shortfall
    details = extra(usage)["cost_details"]
    assert details["rated_tier"] == rated
    assert ("depth_premium" in details["amounts_micros"]) is (not shortfall)
    row = ledger_row(database_url, request_id)
    assert list(row.record.depth.shortfall) == shortfall
    assert row.charge.rated_tier == rated
    assert ("depth_premium" in {line.kind for line in row.charge.lines}) is (not shortfall)
    assert row.charge.total == extra(usage)["cost_micros"]
    assert counted(gateway) == {reason: float(reason in shortfall) for reason in SHORTFALLS}


CAPPED = {"efforts": {"medium": {"floor": 100, "cap": 200, "samples": 1, "max_extensions": 2}}}


@pytest.mark.parametrize("stream", [False, True])
def test_an_engine_that_ignores_the_cap_it_was_asked_to_enforce_bills_no_premium(
    stream: bool, start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    with engine(honours_thinking_budget=False, reasoning_tokens_range=(600, 700)) as url:
        gateway, sdk = customer(start_gateway, url, tmp_path, database_url, CAPPED)
        with sdk:
            request_id, usage = ask(sdk, stream=stream)
        depth = depth_of(usage)
        assert depth["floor_met"] is True and depth["reasoning_tokens"] > depth["cap"] == 200
        check_billed(gateway, database_url, request_id, usage, ["cap_ignored"], "deliberate")


def test_an_engine_that_keeps_to_the_cap_and_the_floor_bills_the_premium(
    start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    with engine(reasoning_tokens_range=(600, 700)) as url:
        gateway, sdk = customer(start_gateway, url, tmp_path, database_url, CAPPED)
        with sdk:
            request_id, usage = ask(sdk, stream=False)
        assert 100 <= depth_of(usage)["reasoning_tokens"] <= 200
        check_billed(gateway, database_url, request_id, usage, [], "deliberate")


def test_a_model_that_stops_short_of_the_floor_is_a_shortfall_billed_fast(
    start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    deliberation = {"efforts": {"medium": {"floor": 5000, "samples": 1, "max_extensions": 1}}}
    with engine(reasoning_tokens_range=(30, 40)) as url:
        gateway, sdk = customer(start_gateway, url, tmp_path, database_url, deliberation)
        with sdk:
            request_id, usage = ask(sdk, stream=True)
        assert depth_of(usage)["floor_met"] is False
        check_billed(gateway, database_url, request_id, usage, ["floor_missed"], "fast")


def test_a_model_that_does_not_reason_at_all_bills_no_premium_even_without_a_floor(
    start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    """A plain model that ignores the instruction to think, with no turn begun for it and no extension: an
    effort level without a floor was `floor_met` before the audit, and billed the premium for no reasoning."""
    deliberation = {
        "reasoning": "prompted",
        "prefill_thinking": False,
        "efforts": {"medium": {"floor": 0, "samples": 1, "max_extensions": 0}},
    }
    with engine("plain", follows_thinking_prompt=False) as url:
        gateway, sdk = customer(start_gateway, url, tmp_path, database_url, deliberation)
        with sdk:
            request_id, usage = ask(sdk, stream=False)
        depth = depth_of(usage)
        assert (depth["floor_met"], depth["reasoning_tokens"]) == (True, 0)
        check_billed(gateway, database_url, request_id, usage, ["effort_ignored"], "deliberate")


@pytest.mark.parametrize("honoured", [False, True])
def test_a_fast_request_whose_engine_ignores_the_thinking_budget_its_client_asked_for(
    honoured: bool, start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    """The fast tier promises no depth, but a `thinking_token_budget` its client sends the engine is audited:
    the row and the counter say when the engine reasoned past it (no premium to forfeit there)."""
    with engine(honours_thinking_budget=honoured, reasoning_tokens_range=(300, 400)) as url:
        gateway, sdk = customer(start_gateway, url, tmp_path, database_url, CAPPED)
        with sdk:
            raw = sdk.chat.completions.with_raw_response.create(
                model="qwen3-8b:fast", messages=MESSAGES, n=2, extra_body={"thinking_token_budget": 50}
            )
        answer = raw.parse()
        usage = answer.usage
        assert usage is not None and usage.completion_tokens_details is not None
        reasoning = usage.completion_tokens_details.reasoning_tokens
        assert reasoning is not None and (reasoning <= 2 * 50) is honoured
        row = ledger_row(database_url, raw.headers["x-tiergate-request-id"])
        shortfall = [] if honoured else ["budget_ignored"]
        assert (row.record.tier, list(row.record.depth.shortfall)) == ("fast", shortfall)
        assert row.record.depth.floor is None and row.charge.rated_tier == "fast"
        text = scrape(gateway.url)
        assert metric(text, SHORTFALL, pool="fast", model="qwen3-8b", reason="budget_ignored") == len(
            shortfall
        )


def test_an_engine_that_returns_fewer_samples_than_asked_bills_no_premium(
    start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    deliberation = {"efforts": {"medium": {"floor": 0, "cap": 2000, "samples": 3, "max_extensions": 0}}}
    with engine(max_choices=2, reasoning_tokens_range=(40, 60)) as url:
        gateway, sdk = customer(start_gateway, url, tmp_path, database_url, deliberation)
        with sdk:
            request_id, usage = ask(sdk, stream=False)
        depth = depth_of(usage)
        assert (depth["samples"], depth["floor_met"]) == (3, True)  # drawn; one never came back
        check_billed(gateway, database_url, request_id, usage, ["samples_short"], "deliberate")
