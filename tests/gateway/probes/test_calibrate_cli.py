"""`tiergate probe --calibrate` end to end: a gateway over the simulator's skill model (its answers' logprobs
tell of their correctness), the frontier as a table and as a PNG, and a settings file the config includes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from engines.simulator import create_simulator_app, profile
from gateway import create_app, load_settings
from gateway.probes.tasks import builtin_tasks
from gateway.tiers import ReasoningEffort, Tier
from tests.conftest import gateway_settings, wait_ready
from tests.processes import TIERGATE
from tests.servers import serving

HIGH = {"floor": 60, "cap": 400, "samples": 3, "max_extensions": 2}
DELIBERATION = {"efforts": {"high": HIGH}}


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[str, str]]:
    with (
        serving(create_simulator_app(profile("fast", zero_latency=True))) as fast,
        serving(create_simulator_app(profile("deliberate", zero_latency=True))) as deliberate,
    ):
        yield fast, deliberate


@pytest.fixture(scope="module")
def url(engines: tuple[str, str]) -> Iterator[str]:
    settings = gateway_settings(
        [engines[0]],
        [engines[1]],
        deliberation=DELIBERATION,
        model_settings={"qwen3-8b": {"cascade": {"threshold": 0.5, "samples": 3}}},
    )
    with serving(create_app(settings)) as url:
        wait_ready(url)
        yield url


def calibrate(url: str, tmp_path: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *TIERGATE,
            "probe",
            "--url",
            url,
            "--model",
            "qwen3-8b",
            "--calibrate",
            "--output",
            str(tmp_path / "calibration.yaml"),
            "--plot",
            str(tmp_path / "frontier.png"),
            "--no-progress",
            *more,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_calibrate_prints_the_frontier_draws_it_and_writes_settings_the_config_includes(
    url: str, engines: tuple[str, str], tmp_path: Path
) -> None:
    result = calibrate(url, tmp_path, "--count", "8", "--target-accuracy", "0.2")
    assert result.returncode == 0, result.stderr
    assert "qwen3-8b: 8 tasks, 0 failed, effort high" in result.stdout
    for cell in (
        "fast",
        "deliberate",
        "fixed vote",
        "stop 0.95",
        "cascade",
        "threshold",
        "chosen",
        "frontier",
    ):
        assert cell in result.stdout
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = yaml.safe_load((tmp_path / "calibration.yaml").read_text())
    chosen = written["models"]["qwen3-8b"]
    threshold = chosen["cascade"]["threshold"]
    assert 0 <= threshold <= 1
    # the gateway's own config includes the file: the cascade's threshold and the high level's vote set,
    # the rest of the level as the config had it
    fast, deliberate = engines
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "include": ["calibration.yaml"],
                "pools": {"fast": {"replicas": [fast]}, "deliberate": {"replicas": [deliberate]}},
                "models": {
                    "qwen3-8b": {
                        "tiers": {
                            "fast": {"pool": "fast"},
                            "deliberate": {"pool": "deliberate", "deliberation": DELIBERATION},
                        },
                        "cascade": {"threshold": 0.5, "samples": 3},
                    }
                },
            }
        )
    )
    settings = load_settings(config)
    model = settings.models["qwen3-8b"]
    assert model.cascade is not None and model.cascade.threshold == threshold and model.cascade.samples == 3
    deliberation = model.tiers[Tier.DELIBERATE].deliberation
    assert deliberation is not None
    level = deliberation.efforts[ReasoningEffort.HIGH]
    assert (level.floor, level.samples) == (HIGH["floor"], HIGH["samples"])
    vote = chosen["tiers"]["deliberate"]["deliberation"]["efforts"]["high"]
    assert level.adaptive == vote["adaptive"]
    assert level.stop_confidence == vote.get("stop_confidence", 0.95)


def test_calibrate_as_json_and_a_target_out_of_reach(url: str, tmp_path: Path) -> None:
    # answers no model gives: every setting is 0% right, none reaches the target
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"question": t.question, "answer": str(int(t.answer) + 1000)}) + "\n"
            for t in builtin_tasks(3)
        )
    )
    result = calibrate(url, tmp_path, "--tasks", str(tasks), "--target-accuracy", "0.5", "--json")
    assert result.returncode == 3
    assert "qwen3-8b: no setting reaches 50.0% accuracy; the most accurate was written" in result.stderr
    model = json.loads(result.stdout)["models"]["qwen3-8b"]
    assert model["tasks"] == 3 and model["samples"] == 3
    assert not model["cascade"]["met"] and not model["deliberate"]["met"]
    assert all(point["accuracy"] == 0 for point in model["points"])
    # all equally wrong: the cheapest, the cascade delivering every fast answer (of the thresholds that do,
    # the highest: the least confidence seen)
    cascades = [p for p in model["points"] if p["tier"] == "cascade"]
    assert model["cascade"]["cost_micros"] == min(p["cost_micros"] for p in cascades)
    delivering_all = [p["threshold"] for p in cascades if p["cost_micros"] == model["cascade"]["cost_micros"]]
    assert model["cascade"]["threshold"] == max(delivering_all) > 0
    written = yaml.safe_load((tmp_path / "calibration.yaml").read_text())
    assert written["models"]["qwen3-8b"]["cascade"]["threshold"] == model["cascade"]["threshold"]
