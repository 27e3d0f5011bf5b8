"""Every knob of the simulator in one frozen dataclass, and the named profiles."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

__all__ = ["PROFILES", "ReasoningField", "SimulatorConfig", "profile"]

ReasoningField = Literal["reasoning", "reasoning_content"]


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """What one simulated engine serves and how it behaves. Defaults are the "fast" profile.

    Lengths are in tokens, times in seconds, rates are probabilities in [0, 1].
    """

    # What is served.
    models: tuple[str, ...] = ("qwen3-8b", "llama-3.1-8b")
    max_model_len: int = 32768
    seed: int = 0
    version: str = "0.11.0"
    # Natural content length (before max_tokens caps it), drawn per choice from the request's seed.
    output_tokens_range: tuple[int, int] = (16, 200)

    # Latency model; zero_latency skips all of it (no sleeps, no queueing) for overhead benchmarks.
    # Once running: TTFT = ttft_base_s + prefill_s_per_token * uncached prompt tokens, then one
    # decode step every itl_s. Beyond max_num_seqs running requests, the rest wait in FIFO order.
    zero_latency: bool = False
    ttft_base_s: float = 0.04
    prefill_s_per_token: float = 0.00002
    itl_s: float = 0.008
    max_num_seqs: int = 64
    kv_cache_tokens: int = 262144
    prefix_cache_blocks: int = 4096  # bounded LRU of 16-token prompt blocks; 0 turns prefix caching off

    # Speculative decoding; 0 speculative tokens turns it off. acceptance_rate is the expected
    # fraction of draft tokens accepted, the same quantity as vLLM's accepted / draft tokens.
    num_speculative_tokens: int = 4
    acceptance_rate: float = 0.7

    # Reasoning (a reasoning parser on the engine): reasoning tokens come first, then content.
    reasoning: bool = False
    reasoning_field: ReasoningField = "reasoning"
    report_reasoning_tokens: bool = True  # many vLLM releases omit completion_tokens_details
    reasoning_tokens_range: tuple[int, int] = (96, 640)
    # An engine that takes `thinking_token_budget` and does not enforce it (an old vLLM ignores unknown
    # fields): its reasoning runs past the cap asked of it, what the gateway's depth audit calls cap_ignored.
    honours_thinking_budget: bool = True
    # An engine that returns fewer choices than a chat request's `n` asks for: at most this many (0: all of
    # them), what the gateway's depth audit calls samples_short.
    max_choices: int = 0
    # Early stopping: this fraction of choices reasons only short_reasoning_range tokens.
    short_reasoning_rate: float = 0.0
    short_reasoning_range: tuple[int, int] = (16, 64)
    # A plain instruct model (no reasoning parser) that follows a chain-of-thought instruction: when a
    # system or developer message names `<think>`, it reasons as above (thinking_token_budget ignored, as
    # a plain model does) but writes it in its content, `<think>...</think>\n\n` then the answer.
    # Ignored when `reasoning` is set: a native reasoner thinks in its own way.
    follows_thinking_prompt: bool = False

    # Skill model, for prompts with a `[task: ...]` marker (engines/simulator/arithmetic.py): the
    # answer is right with probability skill_max - (skill_max - skill_base) * exp(-r / skill_scale_tokens),
    # r the choice's reasoning tokens, those carried in a continued assistant message included.
    skill_base: float = 0.35
    skill_max: float = 0.97
    skill_scale_tokens: float = 400.0
    skill_tempting_rate: float = 0.4  # of wrong answers, the share that is the task's tempting wrong value

    # Constrained output (tool calls, structured output): the arguments or JSON a request gets are drawn
    # from its seed and prompt, so its n choices agree, except this share of choices, drawn on their own.
    structured_variation_rate: float = 0.0
    # Logprobs: a chosen token's logprob is logprob_mean times an Exp(1) draw (mean logprob_mean); near 0
    # is a confident engine, -2 or below an unsure one (x-sim-fault's logprob-mean sets it per request).
    logprob_mean: float = -0.3

    # Failure injection by config (the x-sim-fault header does the same per request).
    error_rate: float = 0.0
    error_status: int = 503
    retry_after_s: int = 1
    die_after_chunks_rate: float = 0.0
    die_after_chunks: int = 3
    stall_seconds: float = 0.0
    stall_rate: float = 1.0  # fraction of requests that stall by stall_seconds before the first token
    healthy: bool = True

    def __post_init__(self) -> None:
        # Callers (the CLI) may pass lists; keep the config hashable and immutable.
        for name in ("models", "output_tokens_range", "reasoning_tokens_range", "short_reasoning_range"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = list(_problems(self))
        if problems:
            raise ValueError("invalid SimulatorConfig: " + "; ".join(problems))


def _problems(c: SimulatorConfig) -> list[str]:
    out: list[str] = []
    if not c.models or len(set(c.models)) != len(c.models) or not all(c.models):
        out.append("models must be non-empty, unique, non-blank names")
    if c.max_model_len < 2:
        out.append("max_model_len must be >= 2")
    for name in ("output_tokens_range", "reasoning_tokens_range", "short_reasoning_range"):
        low, high = getattr(c, name)
        if not 1 <= low <= high:
            out.append(f"{name} must be (low, high) with 1 <= low <= high")
    for name in ("ttft_base_s", "prefill_s_per_token", "itl_s", "stall_seconds"):
        if getattr(c, name) < 0:
            out.append(f"{name} must be >= 0")
    for name in (
        "acceptance_rate",
        "error_rate",
        "die_after_chunks_rate",
        "stall_rate",
        "short_reasoning_rate",
        "skill_base",
        "skill_max",
        "skill_tempting_rate",
        "structured_variation_rate",
    ):
        if not 0.0 <= getattr(c, name) <= 1.0:
            out.append(f"{name} must be within [0, 1]")
    if not -50.0 <= c.logprob_mean < 0.0:
        out.append("logprob_mean must be within [-50, 0)")
    if c.skill_base > c.skill_max:
        out.append("skill_base must be <= skill_max")
    if not c.skill_scale_tokens > 0:
        out.append("skill_scale_tokens must be > 0")
    if c.max_num_seqs < 1 or c.kv_cache_tokens < 1:
        out.append("max_num_seqs and kv_cache_tokens must be >= 1")
    if c.max_choices < 0:
        out.append("max_choices must be >= 0 (0: every choice asked for)")
    if c.num_speculative_tokens < 0 or c.prefix_cache_blocks < 0 or c.die_after_chunks < 0:
        out.append("num_speculative_tokens, prefix_cache_blocks and die_after_chunks must be >= 0")
    if not 400 <= c.error_status <= 599:
        out.append("error_status must be an HTTP error status (429, 500, 503, ...)")
    if c.retry_after_s < 0:
        out.append("retry_after_s must be >= 0")
    if c.reasoning_field not in ("reasoning", "reasoning_content"):
        out.append("reasoning_field must be 'reasoning' or 'reasoning_content'")
    return out


PROFILES: Mapping[str, SimulatorConfig] = MappingProxyType(
    {
        # A speculative-decoding pool: short TTFT, several tokens per decode step.
        "fast": SimulatorConfig(),
        # A reasoning-model pool: slower steps, thinks before it answers, no speculation.
        "deliberate": SimulatorConfig(
            models=("qwen3-8b", "qwen3-32b"),
            ttft_base_s=0.15,
            prefill_s_per_token=0.00005,
            itl_s=0.02,
            num_speculative_tokens=0,
            reasoning=True,
            short_reasoning_rate=0.3,
            structured_variation_rate=0.25,
        ),
        # A plain instruct model: no reasoning parser, but told to think between <think> and </think>
        # (the gateway's prompted chain-of-thought) it does so in its content. One token per step.
        "plain": SimulatorConfig(
            num_speculative_tokens=0,
            follows_thinking_prompt=True,
            short_reasoning_rate=0.3,
        ),
    }
)


def profile(name: str, **overrides: Any) -> SimulatorConfig:
    """The named profile with `overrides` applied (field names of SimulatorConfig)."""
    try:
        base = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown simulator profile {name!r}; choose one of {sorted(PROFILES)}") from None
    return dataclasses.replace(base, **overrides)
