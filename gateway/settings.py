"""Settings: one YAML file, overridden by TIERGATE_* environment variables, validated at start.

This is the only module that reads the environment. `engines` and `pricing` receive plain values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from engines import PoolPolicy, RoutingMode, RoutingPolicy, Timeouts
from gateway.tiers import ReasoningEffort, Tier

__all__ = [
    "AuthSettings",
    "ConfigError",
    "DatabaseSettings",
    "DeliberationSettings",
    "EffortLevel",
    "LedgerSettings",
    "MetricsSettings",
    "ModelSettings",
    "PoolSettings",
    "PricingSettings",
    "ProbeSettings",
    "RedisSettings",
    "ServerSettings",
    "Settings",
    "TierOffer",
    "admin_token_from_environment",
    "api_key_from_environment",
    "config_path_from_environment",
    "export_config_path",
    "export_metrics_dir",
    "load_settings",
    "metrics_multiprocess_dir",
    "settings_from_environment",
]


class ConfigError(Exception):
    """The configuration is unusable; the message names each bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="larger request bodies get HTTP 413")
    # inference requests one worker serves at once (streams until their end); more get 503 gateway_overloaded.
    # The default is EngineTransport's connections per engine replica: past it, requests would queue there
    max_concurrent_requests: int = Field(512, ge=1)
    # client connections one worker holds (idle keep-alive ones included); more are closed as they come
    max_connections: int = Field(2048, ge=1)
    # from a connection's opening (or a request's first byte) to its headers' end; then to its body's end
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"


# A pool's defaults are the engines package's own (engines.PoolPolicy, RoutingPolicy, Timeouts): one
# place for each, which these sections validate and name for the config file.
_POOL, _TIMEOUTS = PoolPolicy(), Timeouts()
_ROUTING = _POOL.routing


class TimeoutSettings(_Section):
    connect_s: float = Field(_TIMEOUTS.connect_s, gt=0)
    first_token_s: float = Field(_TIMEOUTS.first_token_s, gt=0)
    idle_s: float = Field(_TIMEOUTS.idle_s, gt=0)
    total_s: float = Field(_TIMEOUTS.total_s, gt=0)

    def timeouts(self) -> Timeouts:
        return Timeouts(self.connect_s, self.first_token_s, self.idle_s, self.total_s)


class HealthSettings(_Section):
    interval_s: float = Field(_POOL.health_interval_s, gt=0)
    timeout_s: float = Field(_POOL.health_timeout_s, gt=0)


class BreakerSettings(_Section):
    eject_after_failures: int = Field(_POOL.eject_after_failures, ge=1)
    cooldown_s: float = Field(_POOL.cooldown_s, gt=0)


class RoutingSettings(_Section):
    """How a pool picks a replica (docs/routing.md)."""

    mode: RoutingMode = _ROUTING.mode
    scrape_interval_s: float = Field(_POOL.scrape_interval_s, ge=0, description="0: no scraping")
    scrape_timeout_s: float = Field(_POOL.scrape_timeout_s, gt=0)
    stale_after_s: float = Field(_ROUTING.stale_after_s, gt=0, description="older engine stats are not used")
    wait_weight: float = Field(_ROUTING.wait_weight, ge=0, description="score per request waiting")
    kv_weight: float = Field(_ROUTING.kv_weight, ge=0, description="score of a full KV cache")
    affinity_load_factor: float = Field(_ROUTING.load_factor, ge=1.0, description="bounded loads: c x mean")

    def policy(self) -> RoutingPolicy:
        return RoutingPolicy(
            self.mode, self.wait_weight, self.kv_weight, self.stale_after_s, self.affinity_load_factor
        )


class PoolSettings(_Section):
    engine: Literal["vllm", "openai", "trtllm"] = "vllm"
    replicas: list[HttpUrl] = Field(min_length=1)
    api_key: SecretStr | None = None
    max_attempts: int = Field(_POOL.max_attempts, ge=1)
    timeouts: TimeoutSettings = TimeoutSettings()
    health: HealthSettings = HealthSettings()
    breaker: BreakerSettings = BreakerSettings()
    routing: RoutingSettings = RoutingSettings()

    def policy(self) -> PoolPolicy:
        """The pool's policy for `engines.EnginePool`."""
        return PoolPolicy(
            max_attempts=self.max_attempts,
            eject_after_failures=self.breaker.eject_after_failures,
            cooldown_s=self.breaker.cooldown_s,
            health_interval_s=self.health.interval_s,
            health_timeout_s=self.health.timeout_s,
            routing=self.routing.policy(),
            scrape_interval_s=self.routing.scrape_interval_s,
            scrape_timeout_s=self.routing.scrape_timeout_s,
            metrics_family=self.engine,
        )


class EffortLevel(_Section):
    """What the deliberate tier promises at one `reasoning_effort` level."""

    floor: int = Field(0, ge=0, description="reasoning tokens every sample reaches (budget forcing)")
    cap: int | None = Field(None, gt=0, description="reasoning tokens no sample goes beyond")
    samples: int = Field(1, ge=1, le=16, description="self-consistency: samples voted on")
    max_extensions: int = Field(3, ge=0, le=16, description="continuations per sample to reach the floor")

    @model_validator(mode="after")
    def _floor_under_cap(self) -> EffortLevel:
        if self.cap is not None and self.floor > self.cap:
            raise ValueError(f"floor {self.floor} is above cap {self.cap}")
        return self


def _default_efforts() -> dict[ReasoningEffort, EffortLevel]:
    return {
        ReasoningEffort.LOW: EffortLevel(floor=256, cap=1024, samples=1, max_extensions=3),
        ReasoningEffort.MEDIUM: EffortLevel(floor=512, cap=2048, samples=1, max_extensions=4),
        ReasoningEffort.HIGH: EffortLevel(floor=1024, cap=4096, samples=5, max_extensions=6),
    }


class DeliberationSettings(_Section):
    """How the gateway makes a deliberate-tier model think (see docs/deliberation.md)."""

    # native: the engine's reasoning parser returns `reasoning`; prompted: a plain model is told to think
    # between the delimiters, and the gateway splits its text itself
    reasoning: Literal["native", "prompted"] = "native"
    think_open: str = Field("<think>", min_length=1)
    think_close: str = Field("</think>", min_length=1)
    cue: str = Field("Wait", min_length=1, description="appended to the reasoning to make it go on")
    engine_caps_thinking: bool = Field(True, description="the engine takes `thinking_token_budget`")
    # prompted only: the model's turn starts as `think_open` and a newline, continued by the engine
    # (`continue_final_message`), so the model is inside its reasoning from its first token
    prefill_thinking: bool = True
    default_effort: ReasoningEffort = ReasoningEffort.MEDIUM
    efforts: dict[ReasoningEffort, EffortLevel] = Field(default_factory=_default_efforts, min_length=1)
    keepalive_s: float = Field(5.0, gt=0, description="SSE comments while samples run")
    # a request without max_completion_tokens (or max_tokens) may generate, per sample, the level's cap plus
    # this much (all calls together); with one, that bound, of which min_answer_tokens stays for the answer
    answer_tokens: int = Field(2048, ge=1, description="room for the answer after a capped reasoning")
    min_answer_tokens: int = Field(64, ge=1, description="a bound below floor + this cannot meet the floor")


class TierOffer(_Section):
    pool: str
    engine_model: str | None = Field(None, description="the name the engine serves it under; default: the id")
    deliberation: DeliberationSettings | None = None  # deliberate tier only: the depth promise


class ModelSettings(_Section):
    default_tier: Tier | None = None  # default: the only tier, or fast
    tiers: dict[Tier, TierOffer] = Field(min_length=1)
    max_model_len: int | None = Field(None, gt=0)
    # the most one choice (one sample of a deliberation) may generate: a request asking more is a 400, one
    # asking nothing is sent this bound (as OpenAI's models have a maximum output below their context)
    max_output_tokens: int | None = Field(None, gt=0)
    owned_by: str = "tiergate"

    @model_validator(mode="after")
    def _default_is_offered(self) -> ModelSettings:
        if self.default_tier is not None and self.default_tier not in self.tiers:
            raise ValueError(f"default_tier {self.default_tier.value!r} is not one of this model's tiers")
        for tier, offer in self.tiers.items():
            if offer.deliberation is not None and tier is not Tier.DELIBERATE:
                raise ValueError(f"tiers.{tier.value}.deliberation: only the deliberate tier deliberates")
        return self

    @property
    def resolved_default_tier(self) -> Tier:
        if self.default_tier is not None:
            return self.default_tier
        return Tier.FAST if Tier.FAST in self.tiers else next(iter(self.tiers))


def _default_effort_map() -> dict[ReasoningEffort, Tier]:
    low = (ReasoningEffort.NONE, ReasoningEffort.MINIMAL, ReasoningEffort.LOW)
    return {effort: Tier.FAST if effort in low else Tier.DELIBERATE for effort in ReasoningEffort}


class AutoTierSettings(_Section):
    """The weights of the `auto` tier's difficulty score (gateway/deliberation/difficulty.py)."""

    length_per_1k_chars: float = 0.15
    math: float = 0.35
    code: float = 0.3
    multi_step: float = 0.25
    threshold: float = 0.5
    effort_high: float = 1.0
    effort_low: float = -1.0


class TierSettings(_Section):
    # `reasoning_effort` of a request picks a tier when neither the model suffix nor the header did
    reasoning_effort: dict[ReasoningEffort, Tier] = Field(default_factory=_default_effort_map)
    auto: AutoTierSettings = AutoTierSettings()  # `model:auto` and `x-tiergate-tier: auto`


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
    """Read and validate settings; raise ConfigError with every bad key named."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded or {}
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


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


CONFIG_ENV = "TIERGATE_CONFIG"


ADMIN_TOKEN_ENV = "TIERGATE_ADMIN_TOKEN"
API_KEY_ENV = "TIERGATE_API_KEY"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable


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


def settings_from_environment() -> Settings:
    """Settings for a process that only has its environment (uvicorn workers): the file named by
    TIERGATE_CONFIG, if any, plus TIERGATE_* overrides."""
    return load_settings(config_path_from_environment())
