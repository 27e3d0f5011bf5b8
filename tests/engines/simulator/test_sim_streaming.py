"""Streaming chat and text completions: SSE framing, chunks per engine step, the usage chunk."""

from __future__ import annotations

from typing import Any

from engines.simulator import Tokenizer

from .sim_support import Sim, SimFactory, fast, sse_events


async def _stream(sim: Sim, **body: Any) -> list[Any]:
    response = await sim.chat(stream=True, **body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    return sse_events(response.content)


async def test_stream_without_usage_has_no_usage_key(sim: Sim) -> None:
    events = await _stream(sim, max_tokens=12)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    finishing = [c for c in chunks if c["choices"][0]["finish_reason"] is not None]
    assert finishing == [chunks[-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"][0]["delta"]["content"]  # the last tokens ride with finish_reason


async def test_stream_text_equals_non_streaming_text(sim: Sim) -> None:
    body = (await sim.chat(max_tokens=50)).json()
    events = await _stream(sim, max_tokens=50)
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1])
    assert streamed == body["choices"][0]["message"]["content"]


async def test_include_usage_adds_one_final_chunk_with_empty_choices(sim: Sim) -> None:
    events = await _stream(sim, max_tokens=20, ignore_eos=True, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert all(chunk["usage"] is None for chunk in chunks)
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == 20
    assert usage["total_tokens"] == usage["prompt_tokens"] + 20
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    # The same request again: the same usage, except that its prompt's full blocks are now cached.
    again = (await sim.chat(max_tokens=20, ignore_eos=True)).json()["usage"]
    cached = (usage["prompt_tokens"] - 1) // 16 * 16
    assert cached > 0
    assert again == {**usage, "prompt_tokens_details": {"cached_tokens": cached}}


async def test_speculative_decoding_emits_several_tokens_per_chunk(sim: Sim) -> None:
    tokenizer = Tokenizer()
    events = await _stream(sim, max_tokens=120, ignore_eos=True)  # generate exactly max_tokens
    sizes = [tokenizer.count(c["choices"][0]["delta"]["content"]) for c in events[1:-1]]
    assert sum(sizes) == 120
    assert sizes[0] == 1  # prefill yields one token
    assert max(sizes) > 1 and max(sizes) <= 1 + 4  # 1 + accepted draft tokens, at most 4 drafted
    # With acceptance 0.7 of 4 drafts, steps carry ~3.8 tokens on average.
    assert 2.8 < sum(sizes[1:]) / len(sizes[1:]) < 4.6


async def test_without_speculation_every_chunk_is_one_token(sim_factory: SimFactory) -> None:
    sim = await sim_factory(fast(num_speculative_tokens=0))
    tokenizer = Tokenizer()
    events = await _stream(sim, max_tokens=25, ignore_eos=True)
    assert [tokenizer.count(c["choices"][0]["delta"]["content"]) for c in events[1:-1]] == [1] * 25


async def test_n_choices_stream_interleaved_with_own_finish(sim: Sim) -> None:
    events = await _stream(sim, n=2, max_tokens=10, stream_options={"include_usage": True})
    chunks = [e for e in events[:-1] if e["choices"]]
    texts = {0: "", 1: ""}
    finishes: dict[int, list[str]] = {0: [], 1: []}
    for chunk in chunks:
        (choice,) = chunk["choices"]
        texts[choice["index"]] += choice["delta"].get("content", "")
        if choice["finish_reason"]:
            finishes[choice["index"]].append(choice["finish_reason"])
    assert finishes == {0: ["length"], 1: ["length"]}
    body = (await sim.chat(n=2, max_tokens=10)).json()
    assert texts == {c["index"]: c["message"]["content"] for c in body["choices"]}
    assert events[-2]["usage"]["completion_tokens"] == 20


async def test_completions_stream_and_batch(sim: Sim) -> None:
    request = {
        "model": "llama-3.1-8b",
        "prompt": ["Once upon a time", "The quick brown fox"],
        "max_tokens": 6,
    }
    body = (await sim.client.post("/v1/completions", json={**request, "n": 2})).json()
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["usage"]["prompt_tokens"] == 4 + 4
    assert body["usage"]["completion_tokens"] == 24
    streamed = await sim.client.post(
        "/v1/completions", json={**request, "stream": True, "stream_options": {"include_usage": True}}
    )
    events = sse_events(streamed.content)
    texts = {0: "", 1: ""}
    for event in events[:-2]:
        (choice,) = event["choices"]
        assert event["object"] == "text_completion"
        texts[choice["index"]] += choice["text"]
    single = (await sim.client.post("/v1/completions", json=request)).json()
    assert texts == {c["index"]: c["text"] for c in single["choices"]}
    assert events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] == 12


async def test_completions_accept_token_ids(sim: Sim) -> None:
    body = (
        await sim.client.post("/v1/completions", json={"prompt": [1, 2, 3, 4, 5], "max_tokens": 2})
    ).json()
    assert body["usage"]["prompt_tokens"] == 5
    empty = await sim.client.post("/v1/completions", json={"prompt": "", "max_tokens": 2})
    assert empty.status_code == 400
