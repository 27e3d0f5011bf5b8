"""The small routes: models, health, version, load, tokenize; and the config API."""

from __future__ import annotations

import dataclasses

import pytest

from engines.simulator import PROFILES, SimulatorConfig, profile

from .sim_support import MESSAGES, Sim, SimFactory, fast


async def test_models_are_listed_as_vllm_cards(sim: Sim) -> None:
    body = (await sim.client.get("/v1/models")).json()
    assert body["object"] == "list"
    assert [card["id"] for card in body["data"]] == ["qwen3-8b", "llama-3.1-8b"]
    card = body["data"][0]
    assert card == {
        "id": "qwen3-8b",
        "object": "model",
        "created": card["created"],
        "owned_by": "vllm",
        "root": "qwen3-8b",
        "parent": None,
        "max_model_len": 32768,
    }


async def test_health_version_load(sim: Sim) -> None:
    health = await sim.client.get("/health")
    assert health.status_code == 200 and health.content == b""
    assert (await sim.client.get("/version")).json() == {"version": "0.11.0"}
    assert (await sim.client.get("/load")).json() == {"server_load": 0}


async def test_tokenize_agrees_with_usage(sim: Sim) -> None:
    usage = (await sim.chat(max_tokens=3)).json()["usage"]
    by_messages = (
        await sim.client.post("/tokenize", json={"model": "qwen3-8b", "messages": MESSAGES})
    ).json()
    assert by_messages["count"] == usage["prompt_tokens"] == len(by_messages["tokens"])
    assert by_messages["max_model_len"] == 32768
    assert all(isinstance(t, int) for t in by_messages["tokens"])
    completion = (await sim.client.post("/v1/completions", json={"prompt": "Hello, tokenizer world!"})).json()
    by_prompt = (await sim.client.post("/tokenize", json={"prompt": "Hello, tokenizer world!"})).json()
    assert by_prompt["count"] == completion["usage"]["prompt_tokens"] == 6
    again = (await sim.client.post("/tokenize", json={"prompt": "Hello, tokenizer world!"})).json()
    assert again["tokens"] == by_prompt["tokens"]


async def test_generated_text_retokenizes_to_completion_tokens(sim: Sim) -> None:
    body = (await sim.chat(max_tokens=150, ignore_eos=True)).json()
    text = body["choices"][0]["message"]["content"]
    counted = (await sim.client.post("/tokenize", json={"prompt": text})).json()["count"]
    assert counted == body["usage"]["completion_tokens"] == 150


async def test_tokenize_errors(sim: Sim) -> None:
    assert (await sim.client.post("/tokenize", json={"model": "nope", "prompt": "x"})).status_code == 404
    assert (await sim.client.post("/tokenize", json={"model": "qwen3-8b"})).status_code == 400


def test_profiles() -> None:
    assert set(PROFILES) == {"fast", "deliberate", "plain"}
    fast_profile, deliberate_profile = PROFILES["fast"], PROFILES["deliberate"]
    assert fast_profile.models == ("qwen3-8b", "llama-3.1-8b")
    assert (fast_profile.num_speculative_tokens, fast_profile.acceptance_rate) == (4, 0.7)
    assert not fast_profile.reasoning and not fast_profile.follows_thinking_prompt
    assert deliberate_profile.models == ("qwen3-8b", "qwen3-32b")
    assert deliberate_profile.reasoning and deliberate_profile.num_speculative_tokens == 0
    # plain: the fast profile without speculation, following a chain-of-thought instruction
    assert PROFILES["plain"] == dataclasses.replace(
        fast_profile, num_speculative_tokens=0, follows_thinking_prompt=True, short_reasoning_rate=0.3
    )
    with pytest.raises(TypeError):
        PROFILES["mine"] = fast_profile  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast_profile.seed = 3  # type: ignore[misc]


def test_profile_overrides_and_errors() -> None:
    config = profile("deliberate", seed=5, models=["a", "b"], zero_latency=True)
    assert config.seed == 5 and config.models == ("a", "b") and config.reasoning
    assert PROFILES["deliberate"].seed == 0
    with pytest.raises(
        ValueError, match=r"unknown simulator profile 'turbo'.*\['deliberate', 'fast', 'plain'\]"
    ):
        profile("turbo")
    with pytest.raises(ValueError, match="acceptance_rate"):
        SimulatorConfig(acceptance_rate=1.5)
    with pytest.raises(ValueError, match="models"):
        SimulatorConfig(models=())
    with pytest.raises(ValueError, match="output_tokens_range"):
        SimulatorConfig(output_tokens_range=(10, 5))


async def test_custom_models(sim_factory: SimFactory) -> None:
    sim = await sim_factory(fast(models=("tiny",), max_model_len=128))
    assert (await sim.chat(model="tiny", max_tokens=2)).status_code == 200
    assert (await sim.chat(model="qwen3-8b")).status_code == 404
    assert (await sim.client.get("/v1/models")).json()["data"][0]["max_model_len"] == 128
