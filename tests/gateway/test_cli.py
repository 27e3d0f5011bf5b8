"""The `tiergate` command as a user runs it: real processes, real ports."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import unused_url

TIERGATE = [sys.executable, "-m", "gateway"]


def free_port() -> int:
    return int(unused_url().rsplit(":", 1)[1])


def wait_http(url: str, process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"{url} never answered 200; exit code {process.poll()}; output:\n{output}")
        time.sleep(0.1)


@pytest.fixture
def run() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def start(processes: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*TIERGATE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    processes.append(process)
    return process


def test_demo_serves_both_tiers_and_stops_on_ctrl_c(run: list[subprocess.Popen[str]]) -> None:
    port = free_port()
    demo = start(run, "demo", "--port", str(port))
    wait_http(f"http://127.0.0.1:{port}/readyz", demo)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="demo", max_retries=0)
    assert len(list(client.models.list())) == 4
    for model in ("qwen3-8b:fast", "qwen3-8b:deliberate"):
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        message = reply.choices[0].message
        assert message.content or (message.model_extra or {}).get("reasoning")  # 5 tokens may all be thinking
    demo.send_signal(signal.SIGINT)
    output, _ = demo.communicate(timeout=15)
    assert demo.returncode == 0
    assert f'OpenAI(base_url="http://127.0.0.1:{port}/v1"' in output  # the printed snippet
    assert f"curl http://127.0.0.1:{port}/v1/chat/completions" in output
    assert "Traceback" not in output


def test_serve_with_workers_in_front_of_simulate(run: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    engine_port, gateway_port = free_port(), free_port()
    engine = start(run, "simulate", "--port", str(engine_port), "--profile", "deliberate", "--zero-latency")
    wait_http(f"http://127.0.0.1:{engine_port}/health", engine)
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        f"server: {{port: {gateway_port}, workers: 2}}\n"
        f"pools: {{deliberate: {{replicas: ['http://127.0.0.1:{engine_port}'],"
        " health: {interval_s: 0.2}}}\n"
        "models: {qwen3-32b: {tiers: {deliberate: {pool: deliberate}}}}\n"
    )
    gateway = start(run, "serve", "--config", str(config))
    wait_http(f"http://127.0.0.1:{gateway_port}/readyz", gateway)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key="k", max_retries=0)
    for _ in range(4):
        reply = client.chat.completions.create(
            model="qwen3-32b", messages=[{"role": "user", "content": "hi"}]
        )
        assert (reply.choices[0].message.model_extra or {}).get("reasoning")
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(timeout=15)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve"], "give --config FILE"),
        (["serve", "--config", "/nonexistent/tiergate.yaml"], "cannot read config file"),
        (["simulate", "--profile", "quantum"], "quantum"),
    ],
)
def test_bad_invocations_fail_clearly(args: list[str], message: str) -> None:
    result = subprocess.run([*TIERGATE, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_names_the_bad_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "pools: {fast: {replicas: ['http://e:1']}}\nmodels: {m: {tiers: {fast: {pool: gpu}}}}\n"
    )
    result = subprocess.run(
        [*TIERGATE, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "models.m.tiers.fast.pool: no pool named 'gpu'" in result.stderr
