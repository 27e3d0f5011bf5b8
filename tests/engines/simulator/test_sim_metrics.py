"""vLLM metrics: names and labels, counters that agree with usage, queueing, spec decode."""

from __future__ import annotations

import asyncio

import pytest

from tests.prometheus import metric, sample_values

from .sim_support import Sim, SimFactory, deliberate, fast, sse_events

REQUIRED = [
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:spec_decode_num_drafts_total",
    "vllm:spec_decode_num_draft_tokens_total",
    "vllm:spec_decode_num_accepted_tokens_total",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:inter_token_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_count",
    "vllm:request_queue_time_seconds_sum",
]


async def test_metric_names_and_labels(sim: Sim) -> None:
    response = await sim.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    for name in REQUIRED:
        for model in ("qwen3-8b", "llama-3.1-8b"):
            assert metric(response.text, name, model_name=model, engine="0") == 0, name
    for reason in ("stop", "length", "abort", "error", "repetition"):  # vLLM 0.32's FinishReason, all at 0
        values = sample_values(response.text, "vllm:request_success_total", finished_reason=reason)
        assert values == [0.0, 0.0], reason


async def test_counters_agree_with_usage(sim: Sim) -> None:
    prompt = completion = cached = 0
    for max_tokens in (5, 300, 300, 7):
        usage = (await sim.chat(max_tokens=max_tokens)).json()["usage"]
        prompt += usage["prompt_tokens"]
        completion += usage["completion_tokens"]
        cached += usage["prompt_tokens_details"]["cached_tokens"]
    await sim.chat(max_tokens=4, model="llama-3.1-8b")
    text = await sim.metrics()
    qwen = {"model_name": "qwen3-8b"}
    assert metric(text, "vllm:prompt_tokens_total", **qwen) == prompt
    assert metric(text, "vllm:generation_tokens_total", **qwen) == completion
    assert metric(text, "vllm:prefix_cache_queries_total", **qwen) == prompt
    assert metric(text, "vllm:prefix_cache_hits_total", **qwen) == cached > 0
    assert metric(text, "vllm:request_success_total", finished_reason="length", **qwen) == 2
    assert metric(text, "vllm:request_success_total", finished_reason="stop", **qwen) == 2
    assert metric(text, "vllm:e2e_request_latency_seconds_count", **qwen) == 4
    assert metric(text, "vllm:request_success_total", model_name="llama-3.1-8b") == 1
    assert metric(text, "vllm:num_requests_running") == 0


async def test_each_of_n_sequences_reads_the_prompt(sim: Sim) -> None:
    """As vLLM 0.32 counts (measured on the CPU: n=4 of a 46-token prompt, 184 prompt tokens, all computed):
    usage reports the prompt once, the counter once per sequence."""
    usage = (await sim.chat(n=3, max_tokens=5)).json()["usage"]
    text = await sim.metrics()
    assert metric(text, "vllm:prompt_tokens_total") == 3 * usage["prompt_tokens"] > 0
    assert metric(text, "vllm:generation_tokens_total") == usage["completion_tokens"]
    assert metric(text, "vllm:request_success_total") == 3


async def test_continuous_usage_counts_every_chunk(sim: Sim) -> None:
    """vLLM's `continuous_usage_stats`: each chunk carries the prompt and its choice's tokens so far."""
    options = {"include_usage": True, "continuous_usage_stats": True}
    body = (await sim.chat(n=2, max_tokens=30, stream=True, stream_options=options)).content
    events = [event for event in sse_events(body) if event != "[DONE]"]
    *chunks, final = events
    assert final["choices"] == []
    prompt = final["usage"]["prompt_tokens"]
    last: dict[int, int] = {}
    for chunk in chunks:
        (choice,) = chunk["choices"]
        usage = chunk["usage"]
        assert usage["prompt_tokens"] == prompt
        assert usage["completion_tokens"] >= last.get(choice["index"], 0)
        last[choice["index"]] = usage["completion_tokens"]
    assert sorted(last) == [0, 1]
    assert sum(last.values()) == final["usage"]["completion_tokens"] > 0
    plain = (await sim.chat(max_tokens=5, stream=True, stream_options={"include_usage": True})).content
    assert all(event["usage"] is None for event in sse_events(plain)[:-2])


async def test_spec_decode_counters_are_consistent(sim: Sim) -> None:
    choices = 0
    for i in range(10):
        body = (await sim.chat(n=2, seed=i, max_tokens=100, ignore_eos=True)).json()
        choices += len(body["choices"])
    text = await sim.metrics()
    drafts = metric(text, "vllm:spec_decode_num_drafts_total")
    draft_tokens = metric(text, "vllm:spec_decode_num_draft_tokens_total")
    accepted = metric(text, "vllm:spec_decode_num_accepted_tokens_total")
    generated = metric(text, "vllm:generation_tokens_total")
    assert generated == 2000
    assert draft_tokens == 4 * drafts
    assert 0 < accepted <= draft_tokens
    # Each choice: one prefill token, then per draft 1 + accepted tokens.
    assert generated == choices + drafts + accepted
    assert 0.6 < accepted / draft_tokens < 0.8  # the configured acceptance rate, 0.7


async def test_no_speculation_in_the_deliberate_profile(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate())
    await sim.chat()
    text = await sim.metrics()
    assert metric(text, "vllm:spec_decode_num_drafts_total") == 0
    assert metric(text, "vllm:generation_tokens_total") > 96


async def test_queueing_beyond_max_num_seqs(sim_factory: SimFactory) -> None:
    sim = await sim_factory(
        fast(zero_latency=False, max_num_seqs=1, ttft_base_s=0.01, prefill_s_per_token=0.0, itl_s=0.01)
    )
    requests = [asyncio.create_task(sim.chat(max_tokens=20, ignore_eos=True, seed=i)) for i in range(3)]
    await asyncio.sleep(0.03)
    text = await sim.metrics()
    assert metric(text, "vllm:num_requests_running", model_name="qwen3-8b") == 1
    assert metric(text, "vllm:num_requests_waiting", model_name="qwen3-8b") == 2
    assert 0 < metric(text, "vllm:kv_cache_usage_perc", model_name="qwen3-8b") < 1
    assert (await sim.client.get("/load")).json() == {"server_load": 3}
    assert all(r.status_code == 200 for r in await asyncio.gather(*requests))
    text = await sim.metrics()
    assert metric(text, "vllm:num_requests_waiting") == 0
    assert metric(text, "vllm:kv_cache_usage_perc") == 0
    assert metric(text, "vllm:request_queue_time_seconds_count", model_name="qwen3-8b") == 3
    # The last in line waited for the two before it to finish.
    assert metric(text, "vllm:request_queue_time_seconds_sum", model_name="qwen3-8b") > 0.05
    assert metric(text, "vllm:inter_token_latency_seconds_count", model_name="qwen3-8b") > 0
    assert (await sim.client.get("/load")).json() == {"server_load": 0}


async def test_each_app_has_its_own_registry(sim_factory: SimFactory) -> None:
    first = await sim_factory(fast())
    second = await sim_factory(fast())
    await first.chat(max_tokens=3)
    assert metric(await first.metrics(), "vllm:generation_tokens_total") == 3
    assert metric(await second.metrics(), "vllm:generation_tokens_total") == 0


async def test_a_request_cancelled_in_the_queue_leaves_it(sim_factory: SimFactory) -> None:
    sim = await sim_factory(fast(zero_latency=False, max_num_seqs=1, ttft_base_s=0.0, itl_s=0.01))
    running = asyncio.create_task(sim.chat(max_tokens=10, ignore_eos=True))
    queued = asyncio.create_task(sim.chat(max_tokens=10, ignore_eos=True, seed=1))
    await asyncio.sleep(0.02)
    assert sim.app.engine.scheduler.waiting["qwen3-8b"] == 1
    queued.cancel()  # in process, cancelling the caller cancels the request inside the app
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert sim.app.engine.scheduler.waiting["qwen3-8b"] == 0
    assert (await running).status_code == 200
    text = await sim.metrics()
    # as in vLLM, a request that never got its first token counts nothing: no prompt, no finish reason
    assert metric(text, "vllm:request_success_total", finished_reason="abort") == 0
    assert metric(text, "vllm:request_success_total", finished_reason="length") == 1
    assert metric(text, "vllm:generation_tokens_total") == 10
    assert metric(text, "vllm:num_requests_running") == 0
    # The slot it never got is free for the next one.
    assert (await sim.chat(max_tokens=2)).status_code == 200
