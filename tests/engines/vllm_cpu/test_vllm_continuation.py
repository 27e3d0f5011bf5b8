"""The deliberate tier against a real vLLM on the CPU: budget forcing's continuation requests are taken, and
what the gateway meters and bills from them. See README.md in this folder for the set-up.

Runs with `pytest --real-vllm` (or TIERGATE_VLLM_PYTHON set) and is skipped, loudly, otherwise (conftest.py).
The engine is started once for this module (about 1-2 minutes on 2 cores) over a tiny random Llama made by
make_tiny_model.py, with `--reasoning-parser deepseek_r1`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

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

MODEL = "tiny-r1"  # the gateway's public id for it (deliberate tier only)
MAX_TOKENS = 264  # all a sample may write: the cap (200) and min_answer_tokens (64); each call fits in 512
FLOOR, CAP, MAX_EXTENSIONS = 64, 200, 2
DELIBERATION = {
    "efforts": {"medium": {"floor": FLOOR, "cap": CAP, "samples": 1, "max_extensions": MAX_EXTENSIONS}}
}
MESSAGES = user("Is 1001 a prime number?")


@pytest.fixture(scope="module")
def vllm(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLM]:
    root = tmp_path_factory.mktemp("vllm-cpu")
    model = make_tiny_model(vllm_python, root / "tiny-llama")
    with started(vllm_python, model, root, [EngineSpec("vllm", ("--reasoning-parser", "deepseek_r1"))]) as (
        engine,
    ):
        yield engine


@dataclass(frozen=True)
class Deliberating:
    gateway: Gateway
    database_url: str
    sdk: openai.OpenAI


@pytest.fixture
def deliberating(vllm: VLLM, tmp_path: Path) -> Iterator[Deliberating]:
    """A gateway whose tiny-r1 deliberates (floor 64, cap 200, 1 sample, 2 extensions) on the real vLLM."""
    urls = {"deliberate": vllm.url}
    settings, database_url = tiered_settings(tmp_path, MODEL, SERVED, urls, DELIBERATION)
    with serving_gateway(settings) as (gateway, sdk):
        yield Deliberating(gateway, database_url, sdk)


def tokens_of(vllm: VLLM, **body: Any) -> int:
    """Count by vLLM's /tokenize, the way the gateway counts (engines/openai_compat.py count_tokens)."""
    reply = httpx.post(vllm.url + "/tokenize", json={"model": SERVED, **body}, timeout=30)
    assert reply.status_code == 200, reply.text
    count = reply.json()["count"]
    assert isinstance(count, int)
    return count


def stream_chat(vllm: VLLM, body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """One streamed chat call as the gateway's runner makes it; its events and whether [DONE] came."""
    payload = {**body, "model": SERVED, "stream": True, "stream_options": {"include_usage": True}}
    events: list[dict[str, Any]] = []
    done = False
    with httpx.stream("POST", vllm.url + "/v1/chat/completions", json=payload, timeout=120) as reply:
        assert reply.status_code == 200, reply.read().decode()
        for line in reply.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    errors = [event["error"] for event in events if "error" in event]
    assert not errors, f"vLLM refused it mid-stream (HTTP 200, SSE error event): {errors}"
    return events, done


def texts(events: list[dict[str, Any]], field: str) -> dict[int, str]:
    found: dict[int, str] = {}
    for event in events:
        for choice in event.get("choices") or ():
            piece = (choice.get("delta") or {}).get(field)
            found[choice["index"]] = found.get(choice["index"], "") + (piece or "")
    return found


# -- the engine takes what the gateway sends (Deliberator._call and Deliberator.extend) ----------------


def first_call(vllm: VLLM) -> str:
    """The first call of a deliberation (DepthCap sets thinking_token_budget); its reasoning."""
    body = {"messages": MESSAGES, "max_tokens": MAX_TOKENS, "reasoning_effort": "medium"}
    events, done = stream_chat(vllm, {**body, "thinking_token_budget": CAP})
    assert done
    return texts(events, "reasoning").get(0, "")


def test_vllm_takes_the_continuation_that_makes_a_model_think_on(vllm: VLLM) -> None:
    reasoning = first_call(vllm) or " let me see"
    assistant = {"role": "assistant", "content": f"<think>{reasoning}\nWait"}
    body = {
        "messages": [*MESSAGES, assistant],
        "max_tokens": MAX_TOKENS,
        "reasoning_effort": "medium",
        "n": 1,
        "continue_final_message": True,
        "add_generation_prompt": False,
        "thinking_token_budget": CAP,
    }
    events, done = stream_chat(vllm, body)
    assert done
    *chunks, last = events
    assert last["choices"] == [] and all(event.get("usage") is None for event in chunks)
    usage = last["usage"]
    assert usage["completion_tokens"] > 0
    assert usage["prompt_tokens"] > tokens_of(vllm, messages=MESSAGES, add_generation_prompt=True)
    # what comes before </think> is reasoning: `delta.reasoning` (vLLM 0.32 never sends reasoning_content)
    assert not any(
        "reasoning_content" in (c.get("delta") or {}) for e in events for c in e.get("choices") or ()
    )
    finish = [c["finish_reason"] for e in events for c in e.get("choices") or () if c.get("finish_reason")]
    assert finish in (["stop"], ["length"])
    assert "reasoning_tokens" in usage["completion_tokens_details"]


def test_vllm_takes_the_continuation_that_makes_a_model_answer(vllm: VLLM) -> None:
    reasoning = first_call(vllm) or " let me see"
    assistant = {"role": "assistant", "content": f"<think>{reasoning}</think>\n\n"}
    body = {
        "messages": [*MESSAGES, assistant],
        "max_tokens": MAX_TOKENS,
        "n": 1,
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    events, done = stream_chat(vllm, body)
    assert done and events[-1]["usage"]["completion_tokens"] > 0
    # the prompt closed the reasoning: everything generated is the answer
    assert texts(events, "reasoning").get(0, "") == ""


def test_vllm_samples_several_choices_in_one_request(vllm: VLLM) -> None:
    body = {"messages": MESSAGES, "max_tokens": MAX_TOKENS, "n": 3, "thinking_token_budget": CAP}
    events, done = stream_chat(vllm, body)
    finished = {c["index"] for e in events for c in e.get("choices") or () if c.get("finish_reason")}
    assert done and finished == {0, 1, 2}
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] > 0


def test_tokenize_counts_as_the_chat_endpoint_does(vllm: VLLM) -> None:
    reply = httpx.post(
        vllm.url + "/v1/chat/completions",
        json={"model": SERVED, "messages": MESSAGES, "max_tokens": 4},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    # the gateway's count of a cut-short call's prompt (`messages`, generation prompt added)
    assert (
        tokens_of(vllm, messages=MESSAGES, add_generation_prompt=True)
        == reply.json()["usage"]["prompt_tokens"]
    )
    assert tokens_of(vllm, prompt="Wait, let me think.", add_special_tokens=False) > 0


def test_thinking_token_budget_counts_the_reasoning_already_in_the_prompt(vllm: VLLM) -> None:
    """vLLM's budget is for the whole reasoning, the part sent back in a continuation included: a budget
    no larger than that part closes the reasoning at once. So a continuation's budget is the cap, not
    the cap less the reasoning so far (what runner.py sends today)."""
    so_far = " one two three four five six seven eight nine ten"
    in_prompt = tokens_of(vllm, prompt=f"{so_far}\nWait", add_special_tokens=False)
    assistant = {"role": "assistant", "content": f"<think>{so_far}\nWait"}
    body = {
        "messages": [*MESSAGES, assistant],
        "max_tokens": 40,
        "n": 4,
        "continue_final_message": True,
        "add_generation_prompt": False,
        "thinking_token_budget": in_prompt,
    }
    events, _ = stream_chat(vllm, body)
    assert set(texts(events, "reasoning").values()) <= {""}


# -- the gateway over it ----------------------------------------------------------------------------


def test_budget_forcing_through_the_gateway(vllm: VLLM, deliberating: Deliberating) -> None:
    served_before = vllm.counter("vllm:request_success_total")
    prompts_before = vllm.counter("vllm:prompt_tokens_total")
    reply = deliberating.sdk.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, reasoning_effort="medium"
    )
    assert reply.http_response.status_code == 200
    assert reply.headers["x-tiergate-tier"] == "deliberate"
    answer = reply.parse()
    depth = depth_of(answer.usage)
    assert (depth["floor"], depth["cap"], depth["samples"]) == (FLOOR, CAP, 1)
    assert 0 <= depth["extensions"] <= MAX_EXTENSIONS
    assert depth["extensions"] >= 1 or depth["floor_met"], depth
    reasoning = extra(answer.choices[0].message)["reasoning"] or ""
    assert reasoning.count("\nWait") >= depth["extensions"]  # each extension's cue, spliced in
    # every engine call succeeded: the first and one per extension (the engine caps), and one more when the
    # model ended its turn inside its reasoning and was asked to answer (gateway/deliberation/answer.py)
    calls = 1 + depth["extensions"]
    deadline = time.monotonic() + 5
    while vllm.counter("vllm:request_success_total") - served_before < calls and time.monotonic() < deadline:
        time.sleep(0.1)
    assert vllm.counter("vllm:request_success_total") - served_before in (calls, calls + 1)

    usage = answer.usage
    assert usage is not None and usage.completion_tokens_details is not None
    print(f"depth {depth}; usage {usage.model_dump(exclude_none=True)}")  # shown with pytest -s
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    reasoning_tokens = usage.completion_tokens_details.reasoning_tokens
    assert reasoning_tokens is not None and 0 <= reasoning_tokens <= usage.completion_tokens
    assert reasoning_tokens == depth["reasoning_tokens"]
    # each call read the prompt again, the continuations with the reasoning so far
    assert usage.prompt_tokens >= (1 + depth["extensions"]) * tokens_of(
        vllm, messages=MESSAGES, add_generation_prompt=True
    )
    # and what the gateway bills as prompt is what vLLM read: no call uncounted, none counted twice
    assert vllm.counter("vllm:prompt_tokens_total") - prompts_before == usage.prompt_tokens

    request_id = reply.headers["x-tiergate-request-id"]
    row = ledger_row(deliberating.database_url, request_id)
    record = row.record
    assert (record.model, record.served_model, record.tier, record.outcome) == (
        MODEL,
        SERVED,
        "deliberate",
        "ok",
    )
    assert (record.prompt_tokens, record.completion_tokens, record.reasoning_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        reasoning_tokens,
    )
    assert not record.estimated
    assert (record.depth.extensions, record.depth.floor_met) == (depth["extensions"], depth["floor_met"])
    assert row.charge.rated_tier == ("deliberate" if depth["floor_met"] else "fast")
    assert row.charge.total > 0 and extra(usage)["cost_micros"] == row.charge.total
    # the depth audit on a real engine: vLLM keeps to the thinking_token_budget it is sent (the cap, on every
    # call), and the row says what the response said
    assert "cap_ignored" not in depth["shortfall"] and depth["reasoning_tokens"] <= CAP, depth
    assert list(record.depth.shortfall) == depth["shortfall"]
    premium = "depth_premium" in {line.kind for line in row.charge.lines}
    assert premium is (depth["floor_met"] and not depth["shortfall"])
    exchange = deliberating.gateway.recorder.wait_for(request_id)
    assert exchange.status == 200 and exchange.replica == vllm.url


def test_a_streamed_deliberation_through_the_gateway(vllm: VLLM, deliberating: Deliberating) -> None:
    stream = deliberating.sdk.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    reasoning, content, usage, finish = "", "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning") or ""
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert usage is not None and usage.completion_tokens > 0 and finish in ("stop", "length")
    depth = depth_of(usage)
    assert depth["extensions"] >= 1 or depth["floor_met"], depth
    assert reasoning.count("\nWait") >= depth["extensions"]  # relayed live, the cues included


def test_the_reasoning_the_engine_generated_is_counted(vllm: VLLM, deliberating: Deliberating) -> None:
    """vLLM 0.32 reports `reasoning_tokens: 0` when the <think> was in the prompt (this template's generation
    prompt, DeepSeek-R1's, every budget-forcing continuation): the gateway must count the text itself."""
    answer = deliberating.sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
    reasoning = extra(answer.choices[0].message)["reasoning"] or ""
    if not reasoning.strip():
        pytest.skip("the model generated no reasoning this time: nothing to count")
    depth = depth_of(answer.usage)
    assert depth["reasoning_tokens"] >= tokens_of(vllm, prompt=reasoning, add_special_tokens=False) // 2
