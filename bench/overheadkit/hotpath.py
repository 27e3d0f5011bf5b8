"""The hot path's price (issue 18), measured by bench/overhead.py --hot-path: tiergate in three configurations
(overheadkit/gateways.py), for one build or two (--baseline-cmd), beside the direct path and LiteLLM, all in
front of one instant upstream (overheadkit/upstream.py), all running at once and measured in interleaved
rounds (the order of the targets turns every round); medians are reported.

Each round measures, with wrk: JSON at c=1 and c=50, short streams (16 chunks) at c=50, long streams
(--long-tokens chunks, 1,000 by default) at c=10; the CPU of the target's process tree and of the upstream
during each. After the rounds, waves of concurrent streams (500 and 1,000 by default;
overheadkit/streamwave.py in a process of its own), of --wave-tokens chunks paced at --wave-itl-ms by the
upstream, once per gateway and on the direct path: errors, time to first byte, the gateway's CPU and peak
RSS after each wave.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from overheadkit import chat, door, procs, servers, wrk
from overheadkit.chat import Mode
from overheadkit.gateways import PACED_MODEL, Build, Setup, start_gateway
from overheadkit.measure import Settings, Target, measure
from overheadkit.procs import ManagedProcess
from overheadkit.report import DIRECT, LITELLM, Row

BENCH_DIR = Path(__file__).resolve().parents[1]
JSON, STREAM, LONG, WAVES = "json", "stream", "long", "waves"
PARTS = (JSON, STREAM, LONG, WAVES)
# (part, concurrency) measured with wrk in every round, in this order
MEASURES = ((JSON, 1), (JSON, 50), (STREAM, 50), (LONG, 10))
MODES = {JSON: Mode.NON_STREAM, STREAM: Mode.STREAM, LONG: Mode.STREAM}
# LiteLLM relays a 1,000-chunk stream in seconds: its long-stream rows last this long, so that some complete
LITELLM_LONG_S = 20.0


@dataclass(frozen=True)
class Plan:
    duration_s: float
    warmup_s: float
    rounds: int
    parts: tuple[str, ...]
    configs: tuple[str, ...]
    builds: tuple[Build, ...]
    litellm_venv: Path | None  # None: LiteLLM not measured
    long_tokens: int
    waves: tuple[int, ...]
    wave_tokens: int
    wave_itl_ms: float
    setup: Setup
    logs_dir: Path
    work_dir: Path


@dataclass
class Wave:
    """One wave of concurrent streams against one target, and what the target's processes spent on it."""

    target: str
    streams: int
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    gateway_cpu_s: float | None = None
    upstream_cpu_s: float | None = None
    peak_rss_mb: float | None = None
    door_refusals: dict[str, float] = field(default_factory=dict)  # the gateway's door, by reason

    @property
    def errors(self) -> int:
        if self.error is not None or not self.result:
            return self.streams
        return int(self.streams - self.result["ok"])


@dataclass
class Results:
    targets: list[str]
    rows: dict[tuple[str, str, int], list[Row]] = field(default_factory=dict)
    waves: list[Wave] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # target -> why it was not measured


def target_name(build: Build, config: str) -> str:
    return f"{config} ({build.label})" if build.label else config


def _kit_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(BENCH_DIR)}


def start_upstream(stack: contextlib.ExitStack, plan: Plan) -> ManagedProcess:
    port = procs.free_port()
    argv = [sys.executable, "-m", "overheadkit.upstream", str(port), "--paced-model", PACED_MODEL]
    upstream = stack.enter_context(
        procs.managed(
            "upstream",
            [*argv, "--itl-ms", str(plan.wave_itl_ms)],
            base_url=f"http://127.0.0.1:{port}",
            log_path=plan.logs_dir / "upstream.log",
            env=_kit_env(),
            cwd=plan.work_dir,
        )
    )
    upstream.wait_ready("/health", 30.0)
    return upstream


def start_litellm(stack: contextlib.ExitStack, plan: Plan, venv: Path, upstream: ManagedProcess) -> Target:
    port, upstream_port = procs.free_port(), int(upstream.base_url.rsplit(":", 1)[1])
    config = servers.write_json(plan.work_dir / "litellm.yaml", servers.litellm_config(upstream_port))
    proc = stack.enter_context(
        procs.managed(
            LITELLM,
            servers.litellm_argv(venv, config, port),
            base_url=f"http://127.0.0.1:{port}",
            log_path=plan.logs_dir / "litellm.log",
            env=servers.litellm_env(),
            cwd=plan.work_dir,
        )
    )
    proc.wait_ready("/health/readiness", 180.0)
    headers = {"Authorization": f"Bearer {servers.LITELLM_MASTER_KEY}"}
    return Target(LITELLM, proc, headers, upstream)


def body(part: str, plan: Plan) -> str:
    if part == LONG:
        return chat.request_body(Mode.STREAM, max_tokens=plan.long_tokens)
    if part == WAVES:
        return chat.request_body(Mode.STREAM, max_tokens=plan.wave_tokens, model=PACED_MODEL)
    return chat.request_body(MODES[part])


def scripts(target: Target, plan: Plan) -> dict[str, Path]:
    """The wrk script of each wrk part, for this target."""
    found = {}
    for part in (JSON, STREAM, LONG):
        path = plan.work_dir / f"{target.name.replace(' ', '_')}-{part}.lua"
        headers = {"Content-Type": "application/json", **target.headers}
        wrk.write_script(path, body(part, plan), headers, chat.body_markers(MODES[part]))
        found[part] = path
    return found


def warm_up(target: Target, script: dict[str, Path], plan: Plan) -> str | None:
    """A long stream verified end to end, then wrk for the warm-up: fills pools, settles lazy imports."""
    problem = chat.verify(target.proc.base_url, target.headers, Mode.STREAM, max_tokens=plan.long_tokens)
    if problem is not None:
        return f"long stream: {problem}"
    url = target.proc.base_url + chat.CHAT_PATH
    for part, concurrency in ((JSON, 50), (LONG, 10)):
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            wrk.run(url, script[part], connections=concurrency, threads=1, duration_s=plan.warmup_s)
    return None


def run_wave(target: Target, streams: int, plan: Plan) -> Wave:
    wave = Wave(target.name, streams)
    body_file = plan.work_dir / "wave.json"
    body_file.write_text(body(WAVES, plan))
    headers = [arg for name, value in target.headers.items() for arg in ("--header", f"{name}: {value}")]
    argv = [sys.executable, "-m", "overheadkit.streamwave", target.proc.base_url + chat.CHAT_PATH]
    argv += [str(streams), str(body_file), *headers, "--min-events", str(plan.wave_tokens)]
    upstream = target.sim or target.proc
    gateway_before = procs.cpu_seconds(target.proc.pid) if target.sim else None
    upstream_before = procs.cpu_seconds(upstream.pid)
    refused_before = door.refusals(target.proc.base_url) if target.sim else {}
    timeout = 120 + 20 * plan.wave_tokens * plan.wave_itl_ms / 1000
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=_kit_env(), check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr[-300:]}")
        wave.result = json.loads(done.stdout.strip().splitlines()[-1])
    except (RuntimeError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
        wave.error = f"the wave's client failed: {exc}"
    if (died := target.proc.exit_status()) is not None:
        wave.error = f"{target.name} died during the wave ({died})"
        return wave
    if gateway_before is not None:
        wave.gateway_cpu_s = procs.cpu_seconds(target.proc.pid) - gateway_before
        wave.peak_rss_mb = procs.peak_rss_mb(target.proc.pid)
        refused = door.refusals(target.proc.base_url)
        wave.door_refusals = {
            k: v - refused_before.get(k, 0.0) for k, v in refused.items() if v > refused_before.get(k, 0.0)
        }
    wave.upstream_cpu_s = procs.cpu_seconds(upstream.pid) - upstream_before
    return wave


def _progress(name: str, part: str, concurrency: int, row: Row) -> None:
    r = row.result
    if r is None:
        print(f"  {name:20} {part:6} c={concurrency:<3} ERROR {row.error}", flush=True)
        return
    state = "ok" if row.valid else f"INVALID ({row.problem()})"
    cpu = f"cpu {row.server_cpu_pct or 0:4.0f}%"
    print(
        f"  {name:20} {part:6} c={concurrency:<3} {r.rps:9.1f}/s  p50 {r.p50_ms:8.2f} ms  "
        f"p99 {r.p99_ms:8.2f} ms  {cpu}  {state}",
        flush=True,
    )


def _start_all(
    stack: contextlib.ExitStack, plan: Plan, upstream: ManagedProcess, out: Results
) -> list[Target]:
    targets = [Target(DIRECT, upstream, {}, None)]
    for config in plan.configs:
        for build in plan.builds:
            name = target_name(build, config)
            print(f"starting {name}...", flush=True)
            try:
                gw = start_gateway(
                    stack, build, config, name, upstream, (plan.work_dir, plan.logs_dir), plan.setup
                )
            except procs.StartupError as exc:
                print(f"  {name} not measured: {exc}", flush=True)
                out.failed[name] = str(exc).splitlines()[0][:300]
                continue
            targets.append(Target(name, gw.proc, gw.headers, upstream))
    if plan.litellm_venv is not None:
        print("starting LiteLLM...", flush=True)
        try:
            targets.append(start_litellm(stack, plan, plan.litellm_venv, upstream))
        except procs.StartupError as exc:
            print(f"  LiteLLM not measured: {exc}", flush=True)
            out.failed[LITELLM] = str(exc).splitlines()[0][:300]
    return targets


def run(plan: Plan) -> Results:
    out = Results(targets=[])
    settings = Settings(plan.duration_s, plan.warmup_s, (), [], False, 0, plan.logs_dir, plan.work_dir)
    with contextlib.ExitStack() as stack:
        upstream = start_upstream(stack, plan)
        targets = _start_all(stack, plan, upstream, out)
        wrk_parts = [(p, c) for p, c in MEASURES if p in plan.parts]
        ready: list[tuple[Target, dict[str, Path]]] = []
        for target in targets:
            script = scripts(target, plan)
            if wrk_parts and (problem := warm_up(target, script, plan)) is not None:
                print(f"  {target.name} not measured: {problem}", flush=True)
                out.failed[target.name] = problem
                continue
            ready.append((target, script))
        out.targets = [t.name for t, _ in ready] + list(out.failed)
        for turn in range(plan.rounds if wrk_parts else 0):
            print(f"round {turn + 1} of {plan.rounds} ({time.strftime('%H:%M:%S')}):", flush=True)
            order = ready[turn % len(ready) :] + ready[: turn % len(ready)]
            for part, concurrency in wrk_parts:
                for target, script in order:
                    slow = target.name == LITELLM and part == LONG
                    chosen = (
                        replace(settings, duration_s=max(LITELLM_LONG_S, plan.duration_s))
                        if slow
                        else settings
                    )
                    row = measure(target, MODES[part], concurrency, script[part], chosen)
                    _progress(target.name, part, concurrency, row)
                    out.rows.setdefault((target.name, part, concurrency), []).append(row)
        if WAVES in plan.parts:
            for streams in plan.waves:
                for target, _ in ready:
                    if target.name == LITELLM:
                        continue  # minutes per wave, and not what the targets compare
                    wave = run_wave(target, streams, plan)
                    print(f"  {target.name:20} {streams} streams: {wave.error or wave.result}", flush=True)
                    out.waves.append(wave)
                    time.sleep(1.0)  # let the closed connections go before the next wave
    return out
