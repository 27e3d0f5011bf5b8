"""Non-streaming chat completions: shape, determinism, lengths, usage, errors."""

from __future__ import annotations

from engines.simulator import Tokenizer

from .sim_support import MESSAGES, Sim, SimFactory, fast


async def test_response_has_vllm_shape(sim: Sim) -> None:
    response = await sim.chat(max_tokens=8)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "qwen3-8b"
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert "reasoning" not in choice["message"]  # the fast profile has no reasoning parser
    assert choice["finish_reason"] == "length"
    assert set(body["usage"]) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
    }


async def test_same_request_same_output_and_other_seeds_differ(sim: Sim, sim_factory: SimFactory) -> None:
    first = (await sim.chat(max_tokens=40)).json()["choices"][0]["message"]["content"]
    again = (await sim.chat(max_tokens=40)).json()["choices"][0]["message"]["content"]
    other_app = await sim_factory(fast())
    elsewhere = (await other_app.chat(max_tokens=40)).json()["choices"][0]["message"]["content"]
    seeded = (await sim.chat(max_tokens=40, seed=7)).json()["choices"][0]["message"]["content"]
    other_prompt = await sim.chat(max_tokens=40, messages=[{"role": "user", "content": "Something else."}])
    other_config_seed = await sim_factory(fast(seed=1))
    reseeded = (await other_config_seed.chat(max_tokens=40)).json()["choices"][0]["message"]["content"]
    assert first == again == elsewhere
    assert len({first, seeded, other_prompt.json()["choices"][0]["message"]["content"], reseeded}) == 4


async def test_lower_max_tokens_gives_a_prefix_and_finish_length(sim: Sim) -> None:
    natural = (await sim.chat()).json()
    full = natural["choices"][0]["message"]["content"]
    assert natural["choices"][0]["finish_reason"] == "stop"  # natural lengths are far below the context
    assert 16 <= natural["usage"]["completion_tokens"] <= 200
    short = (await sim.chat(max_tokens=5)).json()
    assert short["usage"]["completion_tokens"] == 5
    assert short["choices"][0]["finish_reason"] == "length"
    assert full.startswith(short["choices"][0]["message"]["content"])


async def test_max_completion_tokens_wins_over_max_tokens(sim: Sim) -> None:
    body = (await sim.chat(max_tokens=50, max_completion_tokens=3)).json()
    assert body["usage"]["completion_tokens"] == 3


async def test_usage_arithmetic_and_retokenizing_output(sim: Sim) -> None:
    body = (await sim.chat(max_tokens=30)).json()
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The chat template adds 5 tokens per message and 3 for the generation prompt.
    tokenizer = Tokenizer()
    expected_prompt = sum(tokenizer.count(m["content"]) + 5 for m in MESSAGES) + 3
    assert usage["prompt_tokens"] == expected_prompt
    assert tokenizer.count(body["choices"][0]["message"]["content"]) == usage["completion_tokens"]


async def test_n_choices_are_indexed_distinct_and_summed_in_usage(sim: Sim) -> None:
    body = (await sim.chat(n=3, max_tokens=300)).json()
    choices = body["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["message"]["content"] for c in choices}) == 3
    tokenizer = Tokenizer()
    assert body["usage"]["completion_tokens"] == sum(
        tokenizer.count(c["message"]["content"]) for c in choices
    )


async def test_stop_string_cuts_the_text_before_it(sim: Sim) -> None:
    full = (await sim.chat(max_tokens=60)).json()["choices"][0]["message"]["content"]
    words = full.split()
    stop = " " + words[len(words) // 2]
    expected = full[: full.index(stop)]
    body = (await sim.chat(max_tokens=60, stop=[stop, "never-present"])).json()
    choice = body["choices"][0]
    assert choice["message"]["content"] == expected
    assert choice["finish_reason"] == "stop"
    assert choice["stop_reason"] == stop
    assert body["usage"]["completion_tokens"] == Tokenizer().count(expected) + 1  # the stop word's token


async def test_unknown_fields_are_ignored_and_model_defaults_to_the_first(sim: Sim) -> None:
    response = await sim.client.post(
        "/v1/chat/completions",
        json={
            "messages": MESSAGES,
            "max_tokens": 4,
            "temperature": 0.2,
            "top_k": 5,
            "presence_penalty": 0.5,
            "response_format": {"type": "text"},
            "some_future_field": {"x": 1},
        },
    )
    assert response.status_code == 200
    assert response.json()["model"] == "qwen3-8b"


async def test_content_parts_count_like_plain_text(sim: Sim) -> None:
    text = "Explain speculative decoding in two sentences."
    plain = (await sim.chat(messages=[{"role": "user", "content": text}], max_tokens=4)).json()
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    multi = (await sim.chat(messages=[{"role": "user", "content": parts}], max_tokens=4)).json()
    assert plain["usage"]["prompt_tokens"] == multi["usage"]["prompt_tokens"]


async def test_unknown_model_is_404_in_vllm_shape(sim: Sim) -> None:
    response = await sim.chat(model="gpt-9")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "The model `gpt-9` does not exist.",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }
    }


async def test_context_overflow_is_400_with_vllm_message(sim_factory: SimFactory) -> None:
    sim = await sim_factory(fast(max_model_len=64))
    response = await sim.chat(max_tokens=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    assert error["message"].startswith(
        "This model's maximum context length is 64 tokens. However, you requested"
    )
    long_prompt = [{"role": "user", "content": "word " * 100}]
    too_long = await sim.chat(messages=long_prompt)
    assert too_long.status_code == 400
    assert "your request has 108 input tokens" in too_long.json()["error"]["message"]
    # Without max_tokens the rest of the context is the cap.
    fits = await sim.chat(messages=[{"role": "user", "content": "word " * 50}], ignore_eos=True)
    assert fits.json()["usage"]["total_tokens"] == 64


async def test_malformed_bodies_are_400(sim: Sim) -> None:
    cases = [
        b"{not json",
        b"[]",
        b'{"model": "qwen3-8b"}',
        b'{"model": "qwen3-8b", "messages": []}',
        b'{"model": "qwen3-8b", "messages": "hi"}',
        b'{"model": "qwen3-8b", "messages": [{"role": "user", "content": "x"}], "n": 0}',
        b'{"model": "qwen3-8b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
    ]
    for body in cases:
        response = await sim.client.post("/v1/chat/completions", content=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["type"] == "BadRequestError"


async def test_unknown_route_and_wrong_method(sim: Sim) -> None:
    assert (await sim.client.get("/v1/nothing")).status_code == 404
    assert (await sim.client.get("/v1/chat/completions")).status_code == 405
