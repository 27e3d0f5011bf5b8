"""How each server under test is configured and launched.

Configs are written as JSON, which is also valid YAML, so no YAML writer is needed here.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from overheadkit.chat import MODEL

REPO = Path(__file__).resolve().parents[2]
LITELLM_MASTER_KEY = "sk-bench"
LITELLM_SPEC = "litellm[proxy]"
# find_spec imports nothing, so this check is instant; these are what `litellm --config` needs.
_LITELLM_MODULES = ("litellm", "fastapi", "uvicorn", "backoff", "apscheduler", "orjson", "yaml")


def tiergate_base_command(override: str | None) -> list[str]:
    """The tiergate CLI: an explicit override, else the repo venv's console script, else `-m gateway`."""
    if override:
        return shlex.split(override)
    script = REPO / ".venv" / "bin" / "tiergate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def supports_flag(argv: Sequence[str], flag: str) -> bool:
    """Whether `argv --help` mentions flag; used to lower log levels only where the CLI allows it."""
    try:
        out = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return flag in out.stdout + out.stderr


def simulator_argv(base: Sequence[str], port: int) -> list[str]:
    argv = [
        *base,
        "simulate",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--profile",
        "fast",
        "--zero-latency",
    ]
    # Per-request access logging would be measured as simulator cost, inflating the direct baseline.
    if supports_flag([*base, "simulate"], "--log-level"):
        argv += ["--log-level", "warning"]
    return argv


def tiergate_config(port: int, sim_port: int) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "pools": {"fast": {"replicas": [f"http://127.0.0.1:{sim_port}"]}},
        "models": {MODEL: {"default_tier": "fast", "tiers": {"fast": {"pool": "fast"}}}},
        # the relay's own cost; bench/auth.py measures keys and rate limits on top of it
        "auth": {"mode": "disabled"},
    }


def tiergate_argv(base: Sequence[str], config_path: Path, log_level: str | None = "warning") -> list[str]:
    """`tiergate serve`, one worker; `log_level` None keeps the config's (default: a line per request)."""
    argv = [*base, "serve", "--config", str(config_path)]
    help_has = functools.partial(supports_flag, [*base, "serve"])
    # The comparison is one worker each, whatever the config's default worker count might become.
    if help_has("--workers"):
        argv += ["--workers", "1"]
    # Same treatment as LiteLLM's LITELLM_LOG=ERROR: no per-request log line in either proxy.
    if log_level is not None and help_has("--log-level"):
        argv += ["--log-level", log_level]
    return argv


def litellm_config(sim_port: int) -> dict[str, Any]:
    """Mirror of the tiergate config: one model, one OpenAI-compatible upstream, no database.

    Only settings from LiteLLM's "Best Practices for Production" page are applied; leaving out a
    database is the documented way to run without spend tracking, not a benchmark trick.
    """
    return {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"http://127.0.0.1:{sim_port}/v1",
                    "api_key": "sk-dummy",
                },
            }
        ],
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
        "litellm_settings": {"set_verbose": False, "request_timeout": 600},
    }


def litellm_argv(venv: Path, config_path: Path, port: int) -> list[str]:
    exe = venv / "bin" / "litellm"
    return [
        str(exe),
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]


def litellm_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    # The cost map would otherwise be fetched from GitHub at start-up (no internet here: a slow retry).
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    # Documented production setting: turns off FastAPI/uvicorn per-request INFO logs.
    env["LITELLM_LOG"] = "ERROR"
    return env


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def litellm_ready(venv: Path) -> bool:
    """True when the venv has a litellm console script and the proxy's imports are resolvable."""
    if not (venv / "bin" / "litellm").exists() or not _venv_python(venv).exists():
        return False
    probe = f"import importlib.util as u,sys; sys.exit(not all(u.find_spec(m) for m in {_LITELLM_MODULES!r}))"
    result = subprocess.run(
        [str(_venv_python(venv)), "-c", probe], capture_output=True, timeout=60, check=False
    )
    return result.returncode == 0


def ensure_litellm(venv: Path, log_path: Path) -> None:
    """Create the private LiteLLM venv and install `litellm[proxy]` unless it already works.

    LiteLLM gets its own venv because its dependency pins must not leak into tiergate's.
    """
    if litellm_ready(venv):
        return
    print(f"Installing {LITELLM_SPEC} into {venv} (first run only; takes a minute or two)...", flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(_venv_python(venv)), "-m", "pip", "install", "--quiet", LITELLM_SPEC],
        ]
        for step in steps:
            if subprocess.run(step, stdout=log, stderr=subprocess.STDOUT, check=False).returncode != 0:
                raise RuntimeError(f"`{shlex.join(step)}` failed; see {log_path}")
    if not litellm_ready(venv):
        raise RuntimeError(f"LiteLLM installed but its proxy imports are missing; see {log_path}")


def litellm_installed(venv: Path, log_path: Path) -> bool:
    """ensure_litellm, saying on standard error why LiteLLM is unavailable when it is."""
    try:
        ensure_litellm(venv, log_path)
    except (RuntimeError, OSError) as exc:
        print(f"LiteLLM unavailable: {exc}", file=sys.stderr)
        return False
    return True


def litellm_version(venv: Path) -> str:
    probe = "import importlib.metadata as m; print(m.version('litellm'))"
    result = subprocess.run(
        [str(_venv_python(venv)), "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    return result.stdout.strip() or "unknown"


def tiergate_version() -> str:
    try:
        return importlib.metadata.version("tiergate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
