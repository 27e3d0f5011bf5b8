"""Quality probes: on demand with `tiergate probe`, and periodically inside the gateway, billed to the
internal probe tenant and published as Prometheus gauges."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from engines.simulator import create_simulator_app, profile
from gateway import create_app
from gateway.app import _probe_lease
from gateway.database import open_database
from gateway.probes.prober import PROBE_TENANT
from gateway.probes.tasks import builtin_tasks, load_tasks, run_probe
from gateway.settings import MULTIPROCESS_ENV
from pricing import Ledger
from tests.conftest import Gateway, StartEngine, StartGateway, gateway_settings, wait_ready
from tests.gateway.keys.test_http import ADMIN, new_key
from tests.processes import TIERGATE, run_on_terminal
from tests.prometheus import sample_values, scrape
from tests.servers import serving

DELIBERATION = {"efforts": {"medium": {"floor": 400, "samples": 1, "max_extensions": 6}}}


def test_tasks_are_checkable_and_a_file_replaces_them(tmp_path: Path) -> None:
    tasks = builtin_tasks(5, seed=3)
    assert tasks == builtin_tasks(5, seed=3) and len({t.question for t in tasks}) == 5
    assert all("[task:" in t.question and t.answer.lstrip("-").isdigit() for t in tasks)
    own = tmp_path / "own.jsonl"
    own.write_text(
        '{"question": "Capital of France?", "answer": "Paris"}\n\n{"question": "2+2?", "answer": 4}\n'
    )
    assert [(t.question, t.answer) for t in load_tasks(own)] == [
        ("Capital of France?", "Paris"),
        ("2+2?", "4"),
    ]
    own.write_text('{"question": "no answer"}\n')
    with pytest.raises(ValueError, match=r"own\.jsonl:1"):
        load_tasks(own)


def test_tiergate_probe_shows_what_depth_buys(tmp_path: Path) -> None:
    fast = profile("fast", zero_latency=True)
    deliberate = profile("deliberate", zero_latency=True)
    with (
        serving(create_simulator_app(fast)) as fast_url,
        serving(create_simulator_app(deliberate)) as slow_url,
    ):
        settings = gateway_settings([fast_url], [slow_url], deliberation=DELIBERATION)
        with serving(create_app(settings)) as url:
            wait_ready(url)
            result = subprocess.run(
                [*TIERGATE, "probe", "--url", url, "--model", "qwen3-8b", "--count", "60", "--json"],
                capture_output=True,
                text=True,
                timeout=120,
            )
    assert result.returncode == 0, result.stderr
    rows = {row["tier"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"fast", "deliberate"}
    assert rows["fast"]["answered"] == rows["deliberate"]["answered"] == 60
    assert rows["fast"]["mean_reasoning_tokens"] == 0
    assert rows["deliberate"]["mean_reasoning_tokens"] >= 400  # the floor, delivered
    # the skill model pays reasoning with accuracy: fast ~0.35, deliberate at >= 400 tokens ~0.75
    assert rows["deliberate"]["accuracy"] >= rows["fast"]["accuracy"] + 0.2
    assert rows["deliberate"]["cost_micros"] > rows["fast"]["cost_micros"] > 0


def test_on_a_terminal_probe_draws_a_bar_per_model_and_tier() -> None:
    engine = profile("fast", zero_latency=True)
    with (
        serving(create_simulator_app(engine)) as engine_url,
        serving(create_app(gateway_settings([engine_url], [engine_url]))) as url,
    ):
        wait_ready(url)
        code, output = run_on_terminal(
            [*TIERGATE, "probe", "--url", url, "--model", "qwen3-8b", "--tier", "fast", "--count", "6"]
        )
    assert code == 0, output
    assert "qwen3-8b:fast answered 6 refused 0 errored 0" in output and "6/6" in output  # the bar, done
    assert "━" in output  # drawn as a bar, not the lines written off a terminal
    assert "\x1b[1m" in output and "per right" in output  # the table, its header bold


def metric(url: str, name: str, **labels: str) -> float | None:
    """A gateway's metric, None while it has no such sample (the probes have not published it yet)."""
    values = sample_values(scrape(url), name, **labels)
    return values[0] if values else None


def test_the_gateway_probes_itself_and_bills_the_probe_tenant(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'tiergate.sqlite3'}"
    with serving(create_simulator_app(profile("deliberate", zero_latency=True))) as engine:
        settings = gateway_settings(
            [engine],
            [engine],
            deliberation=DELIBERATION,
            auth={"mode": "keys", "admin_tokens": [ADMIN]},
            database={"url": database_url},
            ledger={"journal_dir": str(tmp_path / "journal")},
            probes={"enabled": True, "tasks": 4, "models": ["qwen3-8b"], "interval_s": 3600},
        )
        with serving(create_app(settings)) as url:
            wait_ready(url)
            deadline = time.monotonic() + 20
            while metric(url, "tiergate_probe_accuracy", model="qwen3-8b", tier="deliberate") is None:
                assert time.monotonic() < deadline, "no probe result published"
                time.sleep(0.1)
            assert metric(url, "tiergate_probe_accuracy", model="qwen3-8b", tier="fast") is not None
            depth = metric(url, "tiergate_probe_mean_reasoning_tokens", model="qwen3-8b", tier="deliberate")
            assert depth is not None and depth >= 400
            assert metric(url, "tiergate_probe_runs_total", model="qwen3-8b", tier="fast") == 1

    async def tenants() -> set[str | None]:
        db = await open_database(database_url)
        try:
            start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
            return {row.record.tenant async for row in Ledger(db).rows(None, start, end)}
        finally:
            await db.aclose()

    assert asyncio.run(tenants()) == {PROBE_TENANT}  # 8 probe requests, all billed to the probe tenant


def test_of_several_workers_one_probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers of one `tiergate serve` share a metrics directory; the lock there says which one probes, and
    passes on when that one stops. A single process (no shared directory) always probes."""
    monkeypatch.delenv(MULTIPROCESS_ENV, raising=False)
    with ExitStack() as alone:
        assert _probe_lease(alone)
    monkeypatch.setenv(MULTIPROCESS_ENV, str(tmp_path))
    with ExitStack() as first, ExitStack() as second:
        assert _probe_lease(first)
        assert not _probe_lease(second)
    with ExitStack() as after:
        assert _probe_lease(after)  # the first worker is gone: the next one to start probes


# a model that is always right: every wrong answer a probe reports is then a miscount
ALWAYS_RIGHT = profile("fast", zero_latency=True, skill_base=1.0, skill_max=1.0)
RPM = 12  # a burst of 12, then one request every 5 s


def limited_gateway(start_engine: StartEngine, start_gateway: StartGateway, tmp_path: Path) -> Gateway:
    engine = start_engine(ALWAYS_RIGHT)
    return start_gateway(
        [engine],
        [engine],
        auth={"mode": "keys", "admin_tokens": [ADMIN]},
        database={"url": f"sqlite:///{tmp_path / 'keys.sqlite3'}"},
    )


def probe_command(url: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TIERGATE, "probe", "--url", url, "--api-key", key, "--model", "qwen3-8b", "--tier", "fast", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_refused_requests_are_not_wrong_answers(
    start_engine: StartEngine, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """More tasks at once than the key's RPM burst, without retries: the refused ones are counted apart,
    and accuracy is over the answered ones (the model is always right, so 100%, not 12 of 16)."""
    gateway = limited_gateway(start_engine, start_gateway, tmp_path)
    key = new_key(gateway, limits={"fast": {"rpm": RPM}})["secret"]
    tasks = RPM + 4
    result = probe_command(
        gateway.url, key, "--count", str(tasks), "--concurrency", str(tasks), "--max-retries", "0", "--json"
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)  # --json: stdout is the JSON and nothing else
    assert row["refused"] >= 1 and row["errored"] == 0 and row["retries"] == 0
    assert row["answered"] + row["refused"] == row["tasks"] == tasks
    assert row["correct"] == row["answered"] and row["accuracy"] == 1.0
    assert row["cost_per_correct_micros"] == -(-row["cost_micros"] // row["answered"])
    assert "16/16" not in result.stderr  # progress only on a terminal, or when asked


def test_a_refused_probe_waits_for_retry_after_and_is_answered(
    start_engine: StartEngine, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """One task more than the burst, all at once: the one refused waits as the 429's retry-after says and is
    then answered. Retrying at once could not succeed (the bucket refills one request every 5 s) within
    the 3 retries allowed; every refusal the gateway counted was followed by one retry."""
    gateway = limited_gateway(start_engine, start_gateway, tmp_path)
    key = new_key(gateway, limits={"fast": {"rpm": RPM}})["secret"]
    tasks = RPM + 1
    result = probe_command(
        gateway.url,
        key,
        *("--count", str(tasks), "--concurrency", str(tasks)),
        *("--max-retries", "3", "--max-retry-wait", "30", "--json", "--progress"),
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["answered"], row["refused"], row["errored"]) == (tasks, 0, 0), result.stderr
    assert row["retries"] >= 1 and row["accuracy"] == 1.0
    assert metric(gateway.url, "tiergate_refusals_total", reason="rate_limit", tier="fast") == row["retries"]
    progress = result.stderr.splitlines()
    assert progress and progress[-1].startswith(f"qwen3-8b:fast {tasks}/{tasks} ")  # asked for: on stderr
    assert "retries" in progress[-1]


def test_a_retry_wait_beyond_the_bound_is_refused_at_once(
    start_engine: StartEngine, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """A 429 whose retry-after exceeds what is left of --max-retry-wait is not waited for."""
    gateway = limited_gateway(start_engine, start_gateway, tmp_path)
    key = new_key(gateway, limits={"fast": {"rpm": 1}})["secret"]  # then one request a minute
    result = probe_command(gateway.url, key, "--count", "3", "--max-retry-wait", "5", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["answered"], row["refused"], row["retries"]) == (1, 2, 0)


async def test_other_failures_are_errors_not_refusals(
    start_engine: StartEngine, start_gateway: StartGateway, tmp_path: Path
) -> None:
    gateway = limited_gateway(start_engine, start_gateway, tmp_path)
    key = new_key(gateway, tiers=["fast"])["secret"]  # the deliberate tier is 403 for it
    async with httpx.AsyncClient(
        base_url=gateway.url, headers={"authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        result = await run_probe(client, "qwen3-8b", "deliberate", builtin_tasks(3))
    assert (result.answered, result.refused, result.errored) == (0, 0, 3)
    assert result.accuracy is None and result.to_dict()["accuracy"] is None


@pytest.mark.parametrize(("status", "outcome"), [(503, "refused"), (400, "errored")])
def test_the_gateways_own_probes_count_refused_and_errored_apart(
    start_engine: StartEngine, start_gateway: StartGateway, status: int, outcome: str
) -> None:
    right = start_engine(ALWAYS_RIGHT)
    failing = start_engine(profile("deliberate", zero_latency=True, error_rate=1.0, error_status=status))
    gateway = start_gateway(
        [right],
        [failing],
        ready=False,
        probes={"enabled": True, "tasks": 4, "models": ["qwen3-8b"], "max_retries": 0},
    )
    url = gateway.url
    deadline = time.monotonic() + 20
    while metric(url, "tiergate_probe_runs_total", model="qwen3-8b", tier="deliberate") is None:
        assert time.monotonic() < deadline, "no probe result published"
        time.sleep(0.1)

    def tasks(tier: str, kind: str) -> float | None:
        return metric(url, "tiergate_probe_tasks_total", model="qwen3-8b", tier=tier, outcome=kind)

    assert [tasks("fast", kind) for kind in ("answered", "refused", "errored")] == [4, 0, 0]
    assert metric(url, "tiergate_probe_accuracy", model="qwen3-8b", tier="fast") == 1.0
    assert tasks("deliberate", outcome) == 4 and tasks("deliberate", "answered") == 0
    assert tasks("deliberate", "refused" if outcome == "errored" else "errored") == 0
    accuracy = metric(url, "tiergate_probe_accuracy", model="qwen3-8b", tier="deliberate")
    assert accuracy is not None and math.isnan(accuracy)  # nothing answered: no accuracy, not 0%
