"""Deliberations stream live: one sample's reasoning and answer as they are generated (an answer that an
extension will discard is never sent), several samples' progress while they run, the first sample's
reasoning throughout; and the deliberate tier's latency metrics measure what the client saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.gateway.accounting.test_metrics import samples, value
from tests.gateway.deliberation.test_http import MESSAGES, deliberating_gateway


def events(gateway_url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The `data:` events of a streamed request, in order, [DONE] left out."""
    with httpx.stream("POST", gateway_url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [orjson.loads(line[len("data: ") :]) for line in lines[:-1]]


def kinds(found: list[dict[str, Any]]) -> list[str]:
    """Each event as what it carries: reasoning, content, progress, winner, finish, usage (or other)."""
    out = []
    for event in found:
        tiergate = event.get("tiergate") or {}
        choice = (event.get("choices") or [{}])[0]
        delta = choice.get("delta") or {}
        if "progress" in tiergate or "winner" in tiergate:
            out.append("progress" if "progress" in tiergate else "winner")
        elif delta.get("reasoning"):
            out.append("reasoning")
        elif delta.get("content"):
            out.append("content")
        elif choice.get("finish_reason"):
            out.append("finish")
        elif event.get("usage"):
            out.append("usage")
        else:
            out.append("other")
    return out


def test_one_sample_streams_its_answer_as_generated_and_never_a_discarded_one(tmp_path: Path) -> None:
    """Reasoning of 30-40 tokens a call against a floor of 100: each call's answer is discarded by an
    extension until the floor is reached; only the last answer is streamed, token by token."""
    efforts = {"medium": {"floor": 100, "samples": 1, "max_extensions": 8}}
    engine = {
        "reasoning_tokens_range": (30, 40),
        "short_reasoning_rate": 0.0,
        "output_tokens_range": (40, 60),
    }
    with deliberating_gateway(engine, {"efforts": efforts}, tmp_path) as (gateway, _, _):
        body = {"model": "qwen3-8b:deliberate", "messages": MESSAGES, "stream": True}
        found = events(gateway.url, body)
    order = kinds(found)
    assert order.count("content") > 10  # token by token, not one piece at the end
    last_reasoning = len(order) - 1 - order[::-1].index("reasoning")
    assert "content" not in order[:last_reasoning]  # no answer streamed while it could still be discarded
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning") or "" for e in found if e.get("choices"))
    assert reasoning.count("\nWait") >= 2  # extensions happened: their answers were held and dropped
    assert "progress" not in order  # one sample: nothing to report but the tokens themselves


def test_several_samples_stream_the_first_ones_reasoning_and_progress(tmp_path: Path) -> None:
    efforts = {"high": {"floor": 0, "samples": 3}}
    engine = {"zero_latency": False, "ttft_base_s": 0.01, "itl_s": 0.002, "reasoning_tokens_range": (40, 60)}
    settings = {"efforts": efforts, "default_effort": "high", "keepalive_s": 5.0}
    with deliberating_gateway(engine, settings, tmp_path) as (gateway, _, _):
        body = {"model": "qwen3-8b:deliberate", "messages": MESSAGES, "stream": True}
        found = events(gateway.url, body)
        metrics = samples(gateway.url)
    order = kinds(found)
    first_progress = order.index("progress")
    assert order[:first_progress].count("reasoning") > 20  # the first sample's, live, before anything else
    progress = [e["tiergate"]["progress"] for e in found if "progress" in (e.get("tiergate") or {})]
    assert all(p["samples"] == 3 for p in progress)
    assert progress[-1]["answered"] == 3 and sum(progress[-1]["votes"].values()) <= 3
    assert order.index("content") > first_progress  # the answer is the vote's, after the samples
    winner = [e["tiergate"]["winner"] for e in found if "winner" in (e.get("tiergate") or {})]
    for chosen in winner:  # another sample won: the client is told which, with its reasoning
        assert chosen["sample"] in (1, 2) and chosen["reasoning"]
    # the inter-token latency is that of the tokens streamed, not ~0 from one burst at the end: at least
    # the engine's 2 ms a token (a lower bound: a slow machine only makes it larger)
    itl_sum = value(metrics, "tiergate_inter_token_latency_seconds_sum", tier="deliberate")
    itl_count = value(metrics, "tiergate_inter_token_latency_seconds_count", tier="deliberate")
    assert itl_count == 1 and itl_sum >= 0.002
