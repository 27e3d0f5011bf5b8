"""The cascade tier through the OpenAI SDK against the simulator: a confident fast answer delivered, an
unsure one escalated to the deliberate tier, streamed both ways, through the Responses API; what the
response says (header, usage.cascade), what the ledger records and bills, and who may use it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from engines.simulator import create_simulator_app, profile
from gateway import create_app
from pricing import cascade_stages
from tests.chat import user
from tests.conftest import Gateway, Recorder, gateway_settings, wait_ready
from tests.gateway.deliberation.test_http import ledger_row
from tests.prometheus import metric, sample_values, scrape
from tests.servers import serving

ADMIN = "admin-token-0123456789abcdef"
# a task of the simulator's skill model: its answers are extractable ("The answer is N.")
TASK = user("Ann has 4 apples, gets 3 more, then gives 2 away. How many are left?\n[task: 4 + 3 - 2]")
SURE, UNSURE = "qwen3-8b", "qwen3-32b"  # thresholds 0 (always delivered) and 1 (always escalated)
DELIBERATION = {"efforts": {"medium": {"floor": 40, "cap": 400, "samples": 1, "max_extensions": 2}}}


@pytest.fixture(scope="module")
def cascading(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    """A gateway whose qwen3-8b and qwen3-32b cascade (thresholds 0 and 1) over simulated engines, with
    keys; yields the gateway and its ledger's database URL."""
    state = tmp_path_factory.mktemp("cascade")
    database_url = f"sqlite:///{state / 'ledger.sqlite3'}"
    models = ("qwen3-8b", "llama-3.1-8b", "qwen3-32b")
    fast = profile("fast", zero_latency=True, models=models)
    deliberate = profile("deliberate", zero_latency=True, models=models, reasoning_tokens_range=(30, 60))
    both = {"fast": {"pool": "fast"}, "deliberate": {"pool": "deliberate", "deliberation": DELIBERATION}}
    with (
        serving(create_simulator_app(fast)) as fast_url,
        serving(create_simulator_app(deliberate)) as deliberate_url,
    ):
        settings = gateway_settings(
            [fast_url],
            [deliberate_url],
            deliberation=DELIBERATION,
            model_settings={
                SURE: {"cascade": {"threshold": 0.0, "samples": 3}},
                UNSURE: {"tiers": both, "cascade": {"threshold": 1.0, "samples": 2}},
            },
            auth={"mode": "keys", "admin_tokens": [ADMIN]},
            database={"url": database_url},
            ledger={"journal_dir": str(state / "journal")},
        )
        recorder = Recorder()
        with serving(create_app(settings, sinks=[recorder])) as url:
            wait_ready(url)
            yield Gateway(url, recorder), database_url


def key_for(gateway: Gateway, tiers: list[str], tenant: str = "acme") -> str:
    """A key as the README makes one: its tiers, each with rpm and tpm limits."""
    headers = {"authorization": f"Bearer {ADMIN}"}
    httpx.post(gateway.url + "/admin/tenants", json={"id": tenant}, headers=headers)
    limits = {tier: {"rpm": 600, "tpm": 200_000} for tier in tiers}
    reply = httpx.post(
        gateway.url + "/admin/keys",
        json={"tenant": tenant, "tiers": tiers, "limits": limits},
        headers=headers,
    )
    assert reply.status_code in (200, 201), reply.text
    return str(reply.json()["secret"])


@pytest.fixture(scope="module")
def client(cascading: tuple[Gateway, str]) -> Iterator[openai.OpenAI]:
    gateway, _ = cascading
    key = key_for(gateway, ["fast", "deliberate", "cascade"])
    with openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0) as sdk:
        yield sdk


def extra(obj: Any) -> dict[str, Any]:
    return dict(obj.model_extra or {})


def test_a_confident_fast_answer_is_delivered_and_billed_at_fast_prices(
    cascading: tuple[Gateway, str], client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(model=f"{SURE}:cascade", messages=TASK)
    reply = raw.parse()
    assert raw.headers["x-tiergate-tier"] == "cascade"
    assert raw.headers["x-tiergate-cascade"].startswith("escalated=false; confidence=")
    assert reply.model == f"{SURE}:cascade"
    assert len(reply.choices) == 1 and reply.choices[0].index == 0
    assert reply.choices[0].logprobs is None  # the gateway's own logprobs request does not leak
    assert "The answer is" in (reply.choices[0].message.content or "")
    usage = extra(reply.usage)
    cascade = usage["cascade"]
    assert cascade["escalated"] is False and cascade["threshold"] == 0.0
    assert 0.0 < cascade["confidence"] <= 1.0 and cascade["signals"]["answered"] is True
    (fast,) = cascade["stages"]
    assert fast["tier"] == "fast" and fast["samples"] == 3 and fast["cost_micros"] == usage["cost_micros"]
    assert reply.usage is not None and reply.usage.prompt_tokens == fast["prompt_tokens"]
    assert usage["cost_details"]["rated_tier"] == "fast"
    row = ledger_row(cascading[1], raw.headers["x-request-id"])
    assert row.record.tier == "cascade" and row.charge.rated_tier == "fast"
    assert row.record.cascade is not None and row.record.cascade.escalated is False
    assert row.record.cascade.confidence == pytest.approx(cascade["confidence"])
    assert row.charge.total == usage["cost_micros"]
    assert row.record.prompt_tokens == fast["prompt_tokens"]


def test_an_unsure_fast_answer_escalates_and_bills_both_stages(
    cascading: tuple[Gateway, str], client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(model=f"{UNSURE}:cascade", messages=TASK)
    reply = raw.parse()
    assert raw.headers["x-tiergate-cascade"].startswith("escalated=true; confidence=")
    assert raw.headers["x-tiergate-cascade"].endswith("threshold=1.0000")
    assert reply.model == f"{UNSURE}:cascade"
    assert extra(reply.choices[0].message).get("reasoning")  # the deliberate tier's answer
    usage = extra(reply.usage)
    cascade = usage["cascade"]
    assert cascade["escalated"] is True and cascade["confidence"] < 1.0
    fast, deliberate = cascade["stages"]
    assert (fast["tier"], fast["samples"], deliberate["tier"]) == ("fast", 2, "deliberate")
    assert usage["reasoning_depth"]["floor"] == 40
    assert fast["cost_micros"] + deliberate["cost_micros"] == usage["cost_micros"]
    assert deliberate["cost_micros"] > fast["cost_micros"] > 0
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == fast["prompt_tokens"] + deliberate["prompt_tokens"]
    assert reply.usage.completion_tokens == fast["completion_tokens"] + deliberate["completion_tokens"]
    assert usage["cost_details"]["rated_tier"] == "cascade"
    row = ledger_row(cascading[1], raw.headers["x-request-id"])
    assert row.record.tier == "cascade" and row.charge.rated_tier == "cascade"
    assert row.record.cascade is not None and row.record.cascade.escalated is True
    assert row.record.cascade.fast_prompt_tokens == fast["prompt_tokens"]
    assert cascade_stages(row.charge) == (fast["cost_micros"], deliberate["cost_micros"])
    assert row.record.depth.floor == 40


def test_a_confident_stream_replays_the_fast_answer(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model=f"{SURE}:cascade", messages=TASK)
    chunks = list(
        client.chat.completions.create(
            model=f"{SURE}:cascade", messages=TASK, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content  # the same request: the same fast answer
    assert {c.model for c in chunks} == {f"{SURE}:cascade"}
    assert all(choice.index == 0 for c in chunks for choice in c.choices)
    assert chunks[-1].usage is not None and extra(chunks[-1].usage)["cascade"]["escalated"] is False


def test_an_unsure_stream_relays_the_deliberation(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=f"{UNSURE}:cascade", messages=TASK, stream=True, stream_options={"include_usage": True}
        )
    )
    reasoning = "".join(extra(c.choices[0].delta).get("reasoning") or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning and "The answer is" in content
    usage = chunks[-1].usage
    assert usage is not None and extra(usage)["cascade"]["escalated"] is True
    assert len(extra(usage)["cascade"]["stages"]) == 2


def test_client_logprobs_are_served_when_asked(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=f"{SURE}:cascade", messages=TASK, logprobs=True)
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
            "tools",
        ),
    ],
)
def test_what_the_cascade_cannot_honour_is_refused_by_name(
    client: openai.OpenAI, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=f"{SURE}:cascade", messages=TASK, **fields)
    assert refused.value.code == "unsupported_parameter" and refused.value.param == param


def test_a_key_without_the_cascade_tier_may_not_use_it(cascading: tuple[Gateway, str]) -> None:
    gateway, _ = cascading
    key = key_for(gateway, ["fast", "deliberate"], tenant="plain")
    with openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0) as sdk:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            sdk.chat.completions.create(model=f"{SURE}:cascade", messages=TASK)
        assert denied.value.code == "tier_not_allowed"
        assert f"{SURE}:cascade" not in {model.id for model in sdk.models.list()}


def test_the_cascade_is_listed_for_a_key_that_may_use_it(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {f"{SURE}:cascade", f"{UNSURE}:cascade"} <= ids
    assert "llama-3.1-8b:cascade" not in ids  # offered in one tier: no cascade


def test_the_responses_api_serves_the_cascade(client: openai.OpenAI) -> None:
    sure = client.responses.create(model=f"{SURE}:cascade", input=TASK[0]["content"], store=False)
    assert sure.status == "completed" and "The answer is" in sure.output_text
    assert extra(sure.usage)["cascade"]["escalated"] is False
    unsure = client.responses.create(model=f"{UNSURE}:cascade", input=TASK[0]["content"], store=False)
    assert unsure.status == "completed" and extra(unsure.usage)["cascade"]["escalated"] is True
    events = list(client.responses.create(model=f"{UNSURE}:cascade", input=TASK[0]["content"], stream=True))
    assert events[-1].type == "response.completed"
    assert "The answer is" in events[-1].response.output_text


def test_the_header_tier_selects_the_cascade(cascading: tuple[Gateway, str], client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=SURE, messages=TASK, extra_headers={"x-tiergate-tier": "cascade"}
    )
    assert raw.headers["x-tiergate-tier"] == "cascade" and "x-tiergate-cascade" in raw.headers


def test_decisions_are_counted(cascading: tuple[Gateway, str], client: openai.OpenAI) -> None:
    client.chat.completions.create(model=f"{SURE}:cascade", messages=TASK)
    client.chat.completions.create(model=f"{UNSURE}:cascade", messages=TASK)
    text = scrape(cascading[0].url)
    assert metric(text, "tiergate_cascade_requests_total", model=SURE, escalated="false") >= 1
    assert metric(text, "tiergate_cascade_requests_total", model=UNSURE, escalated="true") >= 1
    assert not sample_values(text, "tiergate_cascade_requests_total", model=SURE, escalated="true")


def test_a_client_that_leaves_while_the_fast_stage_decides_is_recorded_once(tmp_path: Path) -> None:
    """Keep-alives while the (stalled) fast stage runs; the client leaves after the first: one record, one
    ledger row, tier cascade, nothing escalated."""
    database_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    stalled = profile("fast", zero_latency=True, stall_seconds=30.0)
    deliberate = profile("deliberate", zero_latency=True)
    with (
        serving(create_simulator_app(stalled)) as fast_url,
        serving(create_simulator_app(deliberate)) as deliberate_url,
    ):
        settings = gateway_settings(
            [fast_url],
            [deliberate_url],
            deliberation=DELIBERATION,
            model_settings={SURE: {"cascade": {"threshold": 0.0, "keepalive_s": 0.2}}},
            database={"url": database_url},
            ledger={"journal_dir": str(tmp_path / "journal")},
        )
        recorder = Recorder()
        with serving(create_app(settings, sinks=[recorder])) as url:
            wait_ready(url)
            body = {"model": f"{SURE}:cascade", "messages": TASK, "stream": True}
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as response:
                assert response.status_code == 200
                request_id = response.headers["x-tiergate-request-id"]
                first = next(response.iter_raw())
                assert first.startswith(b": deciding")
            exchange = recorder.wait_for(request_id, timeout=60)
            assert exchange.outcome.value == "client_disconnected"
            row = ledger_row(database_url, request_id)
            assert row.record.tier == "cascade" and row.record.cascade is None
            assert row.charge.total == 0  # the engine generated nothing before the client left


def test_a_greedy_request_draws_one_fast_sample(client: openai.OpenAI) -> None:
    """vLLM refuses n > 1 with temperature 0 (and greedy samples would agree anyway)."""
    reply = client.chat.completions.create(model=f"{SURE}:cascade", messages=TASK, temperature=0)
    cascade = extra(reply.usage)["cascade"]
    assert cascade["stages"][0]["samples"] == 1 and cascade["signals"]["agreement"] == 1.0
