"""Settings: one YAML file, overridden by TIERGATE_* environment variables, validated at start.

This package is the only one that reads the environment (environment.py, and the overrides here); its
sections are in base.py, pools.py and models.py. `engines` and `pricing` receive plain values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.settings.base import ConfigError, _Section
from gateway.settings.environment import (
    CONFIG_ENV,
    MULTIPROCESS_ENV,
    admin_token_from_environment,
    api_key_from_environment,
    config_path_from_environment,
    export_config_path,
    export_log_level,
    export_metrics_dir,
    metrics_multiprocess_dir,
)
from gateway.settings.models import (
    AutoTierSettings,
    CascadeSettings,
    DeliberationSettings,
    EffortLevel,
    ModelSettings,
    TierOffer,
    TierSettings,
)
from gateway.settings.pools import (
    BreakerSettings,
    HealthSettings,
    PoolSettings,
    RoutingSettings,
    TimeoutSettings,
)
from gateway.settings.tracing import TracingSettings
from gateway.tiers import ReasoningEffort, Tier

__all__ = [
    "CONFIG_ENV",
    "MULTIPROCESS_ENV",
    "AuthSettings",
    "AutoTierSettings",
    "BreakerSettings",
    "CascadeSettings",
    "ConfigError",
    "ConsoleSettings",
    "DatabaseSettings",
    "DeliberationSettings",
    "EffortLevel",
    "HealthSettings",
    "LedgerSettings",
    "MetricsSettings",
    "ModelSettings",
    "PoolSettings",
    "PricingSettings",
    "ProbeSettings",
    "RedisSettings",
    "ResponsesSettings",
    "RoutingSettings",
    "ServerSettings",
    "Settings",
    "TierOffer",
    "TierSettings",
    "TimeoutSettings",
    "TracingSettings",
    "admin_token_from_environment",
    "api_key_from_environment",
    "config_path_from_environment",
    "export_config_path",
    "export_log_level",
    "export_metrics_dir",
    "load_settings",
    "metrics_multiprocess_dir",
    "settings_from_environment",
]


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="larger request bodies get HTTP 413")
    # inference requests one worker serves at once (streams until their end); more get 503 gateway_overloaded.
    # The default is EngineTransport's connections per engine replica: past it, requests would queue there
    max_concurrent_requests: int = Field(512, ge=1)
    # the limit: "adaptive" below max_concurrent_requests, moved by the event loop's lag and utilization
    # (http/door.py)
    concurrency: Literal["adaptive", "fixed"] = "adaptive"
    target_loop_lag_s: float = Field(0.05, gt=0, description="the adaptive limit shrinks above this lag")
    target_utilization: float = Field(
        0.9, gt=0, le=1, description="and above this busy share of the loop's time (1: lag alone)"
    )
    target_wait_s: float = Field(
        0.005,
        ge=0,
        description="and above this average wait of a request before its engine call (0: not watched)",
    )
    shed_loop_lag_s: float = Field(
        0.5, ge=0, description="every request is refused above this lag (0: never)"
    )
    # engine streams woken in one turn of the event loop work this long in it (and at least
    # stream_turn_streams of them run); the rest wait for the next, after the loop has polled its sockets
    # (engines/turns.py): a burst of tokens does not hold up a new request or its refusal; a stream's first
    # read never waits. 0: streams take the whole turn
    stream_turn_s: float = Field(0.001, ge=0, le=1)
    stream_turn_streams: int = Field(16, ge=1)
    # priority per tier (http/tier_queues.py): a tier's share of the limit; past it, its requests wait in its
    # queue (at most max_queued, at most max_queue_wait_s), then get 503. A tier not named is not queued
    tier_shares: dict[str, float] = Field(default_factory=lambda: {"deliberate": 0.8})
    max_queue_wait_s: dict[str, float] = Field(default_factory=lambda: {"fast": 0.5, "deliberate": 10.0})
    max_queued: int = Field(256, ge=0)
    # client connections one worker holds (idle keep-alive ones included); more are closed as they come
    max_connections: int = Field(2048, ge=1)
    # from a connection's opening (or a request's first byte) to its headers' end; then to its body's end
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"


class AuthSettings(_Section):
    # "disabled" serves anyone without a key: for local use only, and the server says so loudly
    mode: Literal["keys", "disabled"] = "keys"
    admin_tokens: list[SecretStr] = Field(default_factory=list, description="bearer tokens for /admin/")
    cache_ttl_s: float = Field(1.0, gt=0, le=60, description="a revocation reaches every replica within this")
    # the database down: keys read within this long are served as last read (0: none are)
    stale_while_unavailable_s: float = Field(900.0, ge=0, le=86_400)
    lookup_timeout_s: float = Field(1.0, gt=0, le=60, description="past it, a key lookup counts as failed")

    @model_validator(mode="after")
    def _strong_admin_tokens(self) -> AuthSettings:
        if any(len(token.get_secret_value()) < 16 for token in self.admin_tokens):
            raise ValueError("admin_tokens: each token needs at least 16 characters")
        return self


class DatabaseSettings(_Section):
    # where tenants and keys (and later the ledger) live: sqlite:///path or postgresql://user@host/db
    url: str = "sqlite:///tiergate.sqlite3"
    # PostgreSQL: an outage costs a caller at most one connect; while it lasts callers fail at once
    connect_timeout_s: float = Field(1.0, gt=0, le=60, description="the longest one connect may take")
    statement_timeout_s: float = Field(30.0, gt=0, description="the longest a statement or transaction takes")


class RedisSettings(_Section):
    url: str | None = Field(None, description="redis://host:6379/0; when set, rate limits are shared")
    prefix: str = "tiergate:"
    failure_mode: Literal["open", "closed"] = "open"  # Redis down: skip limits (open) or refuse, 503 (closed)
    timeout_s: float = Field(0.25, gt=0)
    # while other requests are in flight, a request's settlements (limits, budgets) wait up to this long for
    # theirs, to go out in one pipeline (0: each as soon as the loop is free); a request alone never waits
    settle_gather_s: float = Field(0.002, ge=0, le=1)


class PricingSettings(_Section):
    # a versioned price book (docs/pricing.md); without one, requests are metered but not priced
    book: Path | None = None
    stripe_customers: dict[str, str] = Field(default_factory=dict, description="tenant -> Stripe customer id")


class MetricsSettings(_Section):
    # a tenant label on the request and cost counters: one series per tenant, so off unless tenants are few
    tenant_labels: bool = False


class ProbeSettings(_Section):
    """Quality probes run by the gateway itself (docs/deliberation.md#quality-probes)."""

    enabled: bool = False
    interval_s: float = Field(3600.0, gt=0)
    tasks: int = Field(20, ge=1, le=10_000, description="built-in arithmetic tasks per model and tier")
    task_file: Path | None = Field(None, description='JSONL of {"question", "answer"}: your own set')
    models: list[str] | None = None  # default: every model
    tiers: list[Tier] = Field(default_factory=lambda: [Tier.FAST, Tier.DELIBERATE], min_length=1)
    effort: ReasoningEffort | None = None
    daily_limit: str = Field("1.00", description="the most probes spend a day, in the price book's currency")
    max_retries: int = Field(5, ge=0, le=100, description="retries of a task answered 429 or 503")
    max_retry_wait_s: float = Field(120.0, ge=0, le=3600, description="the most a task waits for its retries")

    @model_validator(mode="after")
    def _limit_is_money(self) -> ProbeSettings:
        from pricing import parse_money

        parse_money(self.daily_limit)  # ValueError names the problem
        return self


class LedgerSettings(_Section):
    # each process journals every priced request here before its response completes (kept on local disk)
    journal_dir: Path = Path("tiergate-journal")
    fsync: bool = True  # off only for throwaway setups: a crash could then lose completed requests


class ResponsesSettings(_Section):
    # stored responses (GET /v1/responses/{id}, previous_response_id) live in the database, as tenant data
    store: bool = True  # false: nothing is stored; `store: true` and `previous_response_id` get a 400
    retention_days: float = Field(30.0, gt=0, le=3650, description="a stored response is gone after this")


class ConsoleSettings(_Section):
    """The web console at /console (docs/console.md)."""

    enabled: bool = True
    # signs session cookies and CSRF tokens; unset: a random secret kept in the database, shared by workers
    session_secret: SecretStr | None = None
    session_ttl_s: float = Field(43_200.0, gt=0, le=30 * 86_400, description="a sign-in lasts this long")
    # sign-in attempts per minute from one client address (shared through Redis when redis.url is set)
    sign_in_per_minute: int = Field(10, ge=1, le=10_000)

    @model_validator(mode="after")
    def _strong_secret(self) -> ConsoleSettings:
        if self.session_secret is not None and len(self.session_secret.get_secret_value()) < 32:
            raise ValueError("session_secret needs at least 32 characters")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TIERGATE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    server: ServerSettings = ServerSettings()
    pools: dict[str, PoolSettings] = Field(min_length=1)
    models: dict[str, ModelSettings] = Field(min_length=1)
    tiers: TierSettings = TierSettings()
    auth: AuthSettings = AuthSettings()
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    pricing: PricingSettings = PricingSettings()
    ledger: LedgerSettings = LedgerSettings()
    probes: ProbeSettings = ProbeSettings()
    metrics: MetricsSettings = MetricsSettings()
    responses: ResponsesSettings = ResponsesSettings()
    console: ConsoleSettings = ConsoleSettings()
    tracing: TracingSettings = TracingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings  # the environment overrides the file

    @model_validator(mode="after")
    def _references_resolve(self) -> Settings:
        problems = []
        for model_id, model in self.models.items():
            for tier, offer in model.tiers.items():
                if offer.pool not in self.pools:
                    problems.append(
                        f"models.{model_id}.tiers.{tier.value}.pool: no pool named {offer.pool!r}"
                        f" (pools: {', '.join(sorted(self.pools))})"
                    )
            if any(f"{model_id}:{tier.value}" in self.models for tier in Tier):
                problems.append(f"models.{model_id}: its tier-suffixed ids clash with another model's id")
        for model_id in self.probes.models or ():
            if model_id not in self.models:
                problems.append(f"probes.models: no model named {model_id!r}")
        if problems:
            raise ValueError("\n  - ".join(problems))
        return self


def load_settings(path: Path | None, **overrides: Any) -> Settings:
    """Read and validate settings; raise ConfigError with every bad key named. The file's `include:` (a path
    or a list of them, relative to the file) names files merged over it in order, mapping into mapping (a
    calibration's thresholds, `tiergate probe --calibrate`); an included file includes nothing itself."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(path)
        included = data.pop("include", None)
        names = [included] if isinstance(included, str) else included
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ConfigError(f"config file {path}: `include` must be a path or a list of paths")
        for name in names or ():
            extra = _read_yaml(path.parent / name)
            if "include" in extra:
                raise ConfigError(f"config file {path.parent / name}: an included file cannot include")
            if undefined := _levels_undefined(data, extra):
                # merged over nothing, the level would stand alone, at EffortLevel's defaults (floor 0), and
                # the levels the config left to their defaults would be gone: a promise weakened in silence
                raise ConfigError(
                    f"config file {path.parent / name} tunes effort levels {path} does not define: "
                    + ", ".join(undefined)
                    + " (define each level in the config, its floor, cap and samples; the include tunes it)"
                )
            data = _merged(data, extra)
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded or {}


def _levels_undefined(base: dict[str, Any], extra: dict[str, Any]) -> list[str]:
    """The `models.M.tiers.T.deliberation.efforts.LEVEL` entries of `extra` that `base` does not hold."""
    undefined = []
    for model, entry in _mapping(extra.get("models")).items():
        for tier, offer in _mapping(_mapping(entry).get("tiers")).items():
            levels = _mapping(_mapping(_mapping(offer).get("deliberation")).get("efforts"))
            at = ("models", model, "tiers", tier, "deliberation", "efforts")
            known = base
            for step in at:
                known = _mapping(known.get(step))
            undefined += [".".join((*at, str(level))) for level in levels if level not in known]
    return undefined


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`: a mapping in both is merged key by key, anything else in `extra` replaces."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f"config {path}" if path is not None else "config"
    lines = [f"invalid {where}:"]
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"] if part != "[key]")
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        # cross-reference checks run on the whole file and name their keys themselves
        lines.append(f"  - {key}: {message}" if key else f"  - {message}")
    return "\n".join(lines)


def settings_from_environment() -> Settings:
    """Settings for a process that only has its environment (uvicorn workers): the file named by
    TIERGATE_CONFIG, if any, plus TIERGATE_* overrides."""
    return load_settings(config_path_from_environment())
