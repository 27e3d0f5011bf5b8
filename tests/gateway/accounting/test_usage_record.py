"""From what a request did to the usage record that is rated and kept: exact when the engine counted,
estimated and marked when it could not, never counting a token twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from engines import StreamTally, Usage
from gateway import Outcome, Tier
from gateway.accounting.exchange import Exchange
from gateway.accounting.usage_record import Counted, usage_record
from pricing import Depth

START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def exchange(**changes: Any) -> Exchange:
    values: dict[str, Any] = {
        "request_id": "req_1",
        "endpoint": "chat",
        "key_id": "abc",
        "tenant": "acme",
        "model": "qwen3-8b",
        "served_model": "Qwen/Qwen3-8B",
        "tier": Tier.DELIBERATE,
        "pool": "deliberate",
        "replica": "http://e:1",
        "streamed": False,
        "outcome": Outcome.OK,
        "status": 200,
        "usage": None,
        "tally": None,
        "reply": None,
        "body_size": 400,
        "started_at": START.timestamp(),
        "first_token_s": 0.25,
        "duration_s": 2.0,
    }
    values.update(changes)
    return Exchange(**values)


def test_engine_counts_are_taken_as_they_are() -> None:
    record = usage_record(exchange(usage=Usage(120, 80, cached_tokens=100, reasoning_tokens=50)))
    assert (
        record.prompt_tokens,
        record.cached_tokens,
        record.completion_tokens,
        record.reasoning_tokens,
    ) == (
        120,
        100,
        80,
        50,
    )
    assert not record.estimated and record.outcome == "ok" and record.tier == "deliberate"
    assert record.served_model == "Qwen/Qwen3-8B" and record.tenant == "acme"
    assert record.started_at == START
    assert record.first_token_at == START + timedelta(seconds=0.25)
    assert record.ended_at == START + timedelta(seconds=2)
    assert record.depth == Depth()


def test_missing_reasoning_count_is_split_by_the_reasoning_text() -> None:
    reply = {"choices": [{"index": 0, "message": {"content": "x" * 100, "reasoning": "r" * 300}}]}
    record = usage_record(exchange(usage=Usage(10, 80), reply=reply))
    assert record.completion_tokens == 80 and record.reasoning_tokens == 60  # 3/4 of the text was reasoning
    assert record.estimated
    plain = usage_record(exchange(usage=Usage(10, 80), reply={"choices": [{"message": {"content": "hi"}}]}))
    assert plain.reasoning_tokens == 0 and not plain.estimated
    # vLLM 0.32 says 0 when the <think> was in the prompt: reasoning text with a 0 count is no count
    zero = usage_record(exchange(usage=Usage(10, 80, reasoning_tokens=0), reply=reply))
    assert zero.reasoning_tokens == 60 and zero.estimated
    reported = usage_record(exchange(usage=Usage(10, 80, reasoning_tokens=50), reply=reply))
    assert reported.reasoning_tokens == 50 and not reported.estimated


def test_a_cut_stream_counts_what_it_generated_and_says_so() -> None:
    tally = StreamTally()
    tally.observe({"choices": [{"index": 0, "delta": {"reasoning_content": "abcdefgh"}}]})
    tally.observe({"choices": [{"index": 0, "delta": {"content": "hello"}}]})
    record = usage_record(exchange(streamed=True, tally=tally, outcome=Outcome.CLIENT_DISCONNECTED))
    assert record.estimated and record.outcome == "client_disconnected"
    assert record.completion_tokens == 4  # ceil(13 / 4)
    assert record.reasoning_tokens == 2  # ceil(8 / 4), within the completion
    assert record.prompt_tokens == 100  # 400 request bytes / 4


def test_nothing_generated_counts_nothing() -> None:
    record = usage_record(exchange(streamed=True, tally=StreamTally(), outcome=Outcome.ENGINE_FAILED))
    assert (record.prompt_tokens, record.completion_tokens, record.reasoning_tokens) == (0, 0, 0)
    assert not record.estimated
    assert usage_record(exchange(outcome=Outcome.REJECTED, first_token_s=None)).first_token_at is None


def test_subsets_hold_even_when_an_engine_reports_nonsense() -> None:
    record = usage_record(exchange(usage=Usage(10, 5, cached_tokens=50, reasoning_tokens=9)))
    assert record.cached_tokens == 10 and record.reasoning_tokens == 5


def test_the_engine_tokenizer_counts_a_cut_stream_when_it_answers() -> None:
    tally = StreamTally()
    tally.observe({"choices": [{"index": 0, "delta": {"reasoning": "abcdefgh", "content": "hello"}}]})
    cut = exchange(streamed=True, tally=tally, outcome=Outcome.CLIENT_DISCONNECTED)
    record = usage_record(cut, counted=Counted(prompt=17, content=2, reasoning=3))
    assert (record.prompt_tokens, record.completion_tokens, record.reasoning_tokens) == (17, 5, 3)
    assert record.estimated  # exact counts of the text, but not the engine's own usage
    assert (
        usage_record(exchange(usage=Usage(9, 4)), counted=Counted(1, 1, 1)).prompt_tokens == 9
    )  # usage wins
