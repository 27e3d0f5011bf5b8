"""The environment variables the gateway's processes hand each other (uvicorn's workers, the CLI)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ADMIN_TOKEN_ENV",
    "API_KEY_ENV",
    "CONFIG_ENV",
    "LOG_LEVEL_ENV",
    "MULTIPROCESS_ENV",
    "admin_token_from_environment",
    "api_key_from_environment",
    "config_path_from_environment",
    "export_config_path",
    "export_log_level",
    "export_metrics_dir",
    "metrics_multiprocess_dir",
]


CONFIG_ENV = "TIERGATE_CONFIG"
ADMIN_TOKEN_ENV = "TIERGATE_ADMIN_TOKEN"
API_KEY_ENV = "TIERGATE_API_KEY"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable
LOG_LEVEL_ENV = "TIERGATE_SERVER__LOG_LEVEL"  # server.log_level, as the settings read it from the environment


def config_path_from_environment() -> Path | None:
    path = os.environ.get(CONFIG_ENV)
    return Path(path) if path else None


def api_key_from_environment() -> str | None:
    """The API key `tiergate probe` sends (TIERGATE_API_KEY)."""
    return os.environ.get(API_KEY_ENV) or None


def admin_token_from_environment() -> str | None:
    """The admin token the CLI uses against a running gateway's admin API."""
    return os.environ.get(ADMIN_TOKEN_ENV) or None


def metrics_multiprocess_dir() -> str | None:
    """Where prometheus-client's multiprocess mode keeps the workers' metrics, when it is on."""
    return os.environ.get(MULTIPROCESS_ENV) or None


def export_metrics_dir(path: Path) -> None:
    """Turn prometheus-client's multiprocess mode on for the worker processes about to start."""
    os.environ[MULTIPROCESS_ENV] = str(path)


def export_config_path(path: Path) -> None:
    """Hand the config file to uvicorn's worker processes, which rebuild their settings from it."""
    os.environ[CONFIG_ENV] = str(path.resolve())


def export_log_level(level: str) -> None:
    """Hand the log level (`--log-level` included) to uvicorn's worker processes."""
    os.environ[LOG_LEVEL_ENV] = level
