"""Starting and stopping real vLLM servers on the CPU for this folder's tests (see README.md).

`started(...)` starts several engines at once (each in a process group of its own, under `nice`), waits
until all are healthy and stops them all at the end. The python that runs them is conftest.py's `vllm_python`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway import Settings, create_app, load_settings
from tests.conftest import TEST_DOOR, Gateway, Recorder, unused_url, wait_ready
from tests.servers import serving

HERE = Path(__file__).parent
SERVED = "tiny"  # vLLM's --served-model-name
MAX_MODEL_LEN = 512
START_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class VLLM:
    url: str
    log: Path

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def metrics(self) -> str:
        """The engine's Prometheus text."""
        return httpx.get(self.url + "/metrics", timeout=10).text

    def counter(self, name: str) -> float:
        """A counter of the engine's /metrics, summed over its labels (0 when absent)."""
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in self.metrics().splitlines()
            if line.startswith(name + "{")
        )


@dataclass(frozen=True)
class EngineSpec:
    """One engine to start: a name (its log is NAME.log) and the arguments beyond the common ones."""

    name: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def engine_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1")
    return env


def make_model(python: str, script: str, directory: Path) -> Path:
    """The model that `script` (make_tiny_model.py, make_smollm2_model.py) writes to `directory`."""
    made = subprocess.run(
        [python, str(HERE / script), str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
        env=engine_environment(),
        check=False,
    )
    assert made.returncode == 0, f"{script} failed:\n{made.stdout}\n{made.stderr}"
    return directory


def make_tiny_model(python: str, directory: Path) -> Path:
    """The tiny random Llama of make_tiny_model.py, written to `directory`."""
    return make_model(python, "make_tiny_model.py", directory)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop vLLM and its engine processes (its own process group), forcibly after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # children left behind in the group
        os.killpg(process.pid, signal.SIGKILL)


def _command(python: str, model: Path, served: str, port: str, args: Sequence[str]) -> list[str]:
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    return [
        *nice,
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        served,
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--dtype",
        "float32",
        # no torch.compile: it is most of an engine's start on the CPU (114 s to healthy against 32 s
        # eager, SmolLM2, measured), and these tests are about what crosses the wire, not the kernels
        "--enforce-eager",
        *args,
    ]


@contextlib.contextmanager
def started(
    python: str, model: Path, logs: Path, specs: Sequence[EngineSpec], served: str = SERVED
) -> Iterator[list[VLLM]]:
    """Start one vLLM per spec, all at once, serving `model` as `served`; yield them once every one is
    healthy; stop them all."""
    engines: list[VLLM] = []
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for spec in specs:
            url = unused_url()
            engine = VLLM(url, logs / f"{spec.name}.log")
            command = _command(python, model, served, url.rsplit(":", 1)[1], spec.args)
            with engine.log.open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        command,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**engine_environment(), **dict(spec.env)},
                        start_new_session=True,
                    )
                )
            engines.append(engine)
        began = time.monotonic()
        waiting = dict(enumerate(engines))
        while waiting:
            for index, engine in list(waiting.items()):
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(engine.url + "/health", timeout=2).status_code == 200:
                        del waiting[index]
                        name = specs[index].name
                        print(f"vLLM {name} on {engine.url} healthy after {time.monotonic() - began:.0f} s")
                        print(f"  log: {engine.log}")
                        continue
                process = processes[index]
                if process.poll() is not None:
                    pytest.fail(
                        f"vLLM {specs[index].name} exited with {process.returncode} while starting:\n"
                        f"{engine.tail()}"
                    )
                if time.monotonic() - began > START_TIMEOUT_S:
                    name = specs[index].name
                    pytest.fail(f"vLLM {name} not healthy after {START_TIMEOUT_S:.0f} s:\n{engine.tail()}")
            time.sleep(0.5)
        yield engines
    finally:
        for process in processes:
            stop(process)


@contextlib.contextmanager
def serving_gateway(settings: Settings) -> Iterator[tuple[Gateway, openai.OpenAI]]:
    """A gateway in this process over the real engines, and an OpenAI SDK client of it (slow engines: long
    timeouts, no retries)."""
    recorder = Recorder()
    with serving(create_app(settings, sinks=[recorder])) as url:
        wait_ready(url, timeout=30)
        sdk = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        try:
            yield Gateway(url, recorder), sdk
        finally:
            sdk.close()


PRICE_BOOK = """\
currency: USD
versions:
  - effective_from: 2026-01-01
    prices:
      fast:
        {model}: {{input: "0.05", cached_input: "0.01", output: "0.20", request: "0"}}
      deliberate:
        {model}: {{input: "0.10", cached_input: "0.02", output: "0.60", reasoning: "0.60",
                  request: "0.0001", depth_premium: "0.0005"}}
"""


def tiered_settings(
    root: Path,
    model: str,
    served: str,
    pools: Mapping[str, str],
    deliberation: Mapping[str, Any],
    cascade: Mapping[str, Any] | None = None,
) -> tuple[Settings, str]:
    """Gateway settings over real engines, and its ledger's database URL: a pool per tier (`pools`: tier ->
    engine URL) scraped every 0.5 s, `model` offered in each of those tiers as the engine's `served`, with
    `deliberation` in the deliberate one (and `cascade` settings, when given); its price book, ledger and
    journal under `root`; its door a fixed limit that does not shed on the loop's lag."""
    book = root / "prices.yaml"
    book.write_text(PRICE_BOOK.format(model=model), encoding="utf-8")
    database_url = f"sqlite:///{root / 'ledger.sqlite3'}"
    common = {
        "health": {"interval_s": 0.5},
        "timeouts": {"first_token_s": 120, "idle_s": 60},
        "routing": {"scrape_interval_s": 0.5},
    }
    tiers = {
        tier: {"pool": tier, "engine_model": served}
        | ({"deliberation": dict(deliberation)} if tier == "deliberate" else {})
        for tier in pools
    }
    settings = load_settings(
        None,
        pools={tier: {"replicas": [url], **common} for tier, url in pools.items()},
        models={
            model: {"max_model_len": MAX_MODEL_LEN, "tiers": tiers}
            | ({"cascade": dict(cascade)} if cascade is not None else {})
        },
        auth={"mode": "disabled"},
        database={"url": database_url},
        ledger={"journal_dir": str(root / "journal")},
        pricing={"book": str(book)},
        server={**TEST_DOOR},  # the SDK shares this process (and slow engines the machine)
    )
    return settings, database_url
