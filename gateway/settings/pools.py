"""A pool of engine replicas: its engine family, replicas, timeouts, health checks, breaker and routing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, HttpUrl, SecretStr

from engines import PoolPolicy, RoutingMode, RoutingPolicy, Timeouts
from gateway.settings.base import _Section

__all__ = ["BreakerSettings", "HealthSettings", "PoolSettings", "RoutingSettings", "TimeoutSettings"]


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
    # send each request's tier as vLLM's `priority` (fast 0 before deliberate 10); the engine must run with
    # `--scheduling-policy priority` (vLLM refuses a priority otherwise). For a pool both tiers share
    priority: bool = False

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
