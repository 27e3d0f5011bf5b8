"""Tenants, keys and budgets made with a tiergate build's own CLI, straight in the database its config names,
before its gateway starts: what an operator types (README, "Run it for real")."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from overheadkit.procs import StartupError

__all__ = ["clean_env", "create_key", "tiergate_cli"]


def clean_env() -> dict[str, str]:
    """The environment without TIERGATE_* variables: tiergate reads them as config overrides, and one left
    in the shell (a redis URL, say) would silently change what a configuration measures."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}


def tiergate_cli(cmd: Sequence[str], args: Sequence[str], cwd: Path) -> str:
    """Run `cmd args` (cmd: the tiergate CLI); its standard output, or StartupError with its tail."""
    argv = [*cmd, *args]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env=clean_env(), cwd=cwd, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StartupError(f"`{' '.join(argv)}` failed: {exc}") from exc
    if done.returncode != 0:
        raise StartupError(
            f"`{' '.join(argv)}` exited {done.returncode}: {(done.stderr or done.stdout)[-500:]}"
        )
    return done.stdout


def create_key(
    cmd: Sequence[str],
    config_path: Path,
    cwd: Path,
    *,
    tenant: str,
    name: str,
    tiers: str,
    limits: tuple[int, int] | None,
) -> str:
    """Create a key of `tenant` with (rpm, tpm) `limits` (None: none); returns the full key."""
    key = ["--tenant", tenant, "--name", name, "--tiers", tiers]
    if limits is not None:
        key += ["--rpm", str(limits[0]), "--tpm", str(limits[1])]
    out = tiergate_cli(cmd, ["keys", "create", *key, "--config", str(config_path), "--json"], cwd)
    try:
        secret = json.loads(out)["secret"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StartupError(f"`tiergate keys create --json` printed no secret: {out[:300]}") from exc
    if not isinstance(secret, str) or not secret:
        raise StartupError("`tiergate keys create --json` printed an empty secret")
    return secret
