"""Everything a running gateway holds, built in the app's lifespan from settings."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import httpx
from prometheus_client import CollectorRegistry

from engines import (
    EngineHTTP,
    EnginePool,
    LoopLag,
    OpenAICompatEngine,
    TrtllmEngine,
    Turns,
)
from gateway.accounting.bookkeeper import Bookkeeper
from gateway.accounting.exchange import MeterSink
from gateway.accounting.metrics import GatewayCollector, RequestMetrics
from gateway.budgets import BudgetKeeper, LocalBudgets, RedisBudgets
from gateway.console import Console
from gateway.database import Database, open_database
from gateway.http.door import AdaptiveLimit, Door
from gateway.http.door_metrics import DoorCollector
from gateway.http.tier_queues import TierQueues
from gateway.inference.admission import Admitter
from gateway.inference.catalog import Catalog
from gateway.inference.handler import InferenceProxy
from gateway.keys import Authenticator, KeyStore
from gateway.limits import LocalLimiter, RateLimiter, RedisLimiter
from gateway.responses import ResponsesAPI, ResponseStore
from gateway.settings import ConfigError, PoolSettings, Settings
from pricing import PriceBook, PricingError, load_price_book

if TYPE_CHECKING:
    from gateway.accounting.tracing import Tracing

__all__ = ["GatewayState", "price_book"]

log = logging.getLogger("tiergate")


@dataclass(frozen=True, slots=True)
class GatewayState:
    settings: Settings
    catalog: Catalog
    pools: Mapping[str, EnginePool]
    http: EngineHTTP
    proxy: InferenceProxy
    admitter: Admitter
    limiter: RateLimiter
    budgets: BudgetKeeper | None  # None without a price book: budgets are money
    database: Database | None  # None when neither keys nor the admin API are in use
    keys: KeyStore | None
    authenticator: Authenticator | None
    bookkeeper: Bookkeeper | None  # None without a price book: nothing to bill
    registry: CollectorRegistry  # what GET /metrics serves (see gateway.accounting.metrics.scrape_registry)
    collector: GatewayCollector
    door: Door  # which inference requests this worker lets in (gateway.http.door; gateway.http.dispatch)
    responses: ResponsesAPI
    response_store: ResponseStore | None  # None: responses.store is off
    lag: LoopLag  # this worker's event-loop lag: the door sheds on it, deadlines allow for it
    door_collector: DoorCollector  # the door's and the lag's metrics (in `registry` too)
    queues: TierQueues  # priority per tier: each tier's share of the door's limit, its queue
    console: Console | None = None  # the web console at /console; None: off (gateway/console)
    tracing: Tracing | None = None  # None: tracing is off (no tracer provider, no spans)

    @property
    def price_book(self) -> PriceBook | None:
        return self.proxy.price_book

    @classmethod
    async def create(
        cls,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sinks: Sequence[MeterSink] | None = None,
    ) -> GatewayState:
        database: Database | None = None
        keys: KeyStore | None = None
        authenticator: Authenticator | None = None
        catalog = Catalog(settings.models, settings.tiers.reasoning_effort, settings.tiers.auto)
        book = price_book(settings, catalog)
        lag = LoopLag()
        door = _door(settings, lag)

        def others_in_flight() -> bool:  # settlements then gather for theirs (redis.settle_gather_s)
            return door.occupied > 1  # deliberations in their tier's slot too

        def alone() -> bool:  # a lone request's ledger row is written on the loop (pricing.journal)
            return not others_in_flight()

        if settings.auth.mode == "keys" or settings.auth.admin_tokens or book is not None:
            database = await open_database(
                settings.database.url,
                connect_timeout_s=settings.database.connect_timeout_s,
                statement_timeout_s=settings.database.statement_timeout_s,
                lag=lag,
            )
        bookkeeper = None
        if book is not None:
            assert database is not None
            bookkeeper = await Bookkeeper.open(
                database, settings.ledger.journal_dir, fsync=settings.ledger.fsync, alone=alone
            )
        if settings.auth.mode == "keys" or settings.auth.admin_tokens:
            assert database is not None
            keys = KeyStore(database)
            await keys.migrate()
        if settings.auth.mode == "keys":
            assert keys is not None
            authenticator = Authenticator(
                keys,
                cache_ttl_s=settings.auth.cache_ttl_s,
                stale_while_unavailable_s=settings.auth.stale_while_unavailable_s,
                lookup_timeout_s=settings.auth.lookup_timeout_s,
                lag=lag,
            )
        else:
            log.warning(
                "AUTHENTICATION IS DISABLED (auth.mode: disabled): anyone who can reach this gateway can use "
                "it, with no rate limits. Use this for local development only."
            )
        redis = settings.redis

        limiter: RateLimiter = (
            RedisLimiter(
                redis.url,
                prefix=redis.prefix,
                fail_open=redis.failure_mode == "open",
                timeout_s=redis.timeout_s,
                settle_delay_s=redis.settle_gather_s,
                gather=others_in_flight,
                lag=lag,
            )
            if redis.url
            else LocalLimiter()
        )
        budgets: BudgetKeeper | None = None
        if bookkeeper is not None:
            # a reservation outlives its request only when the process died: then it lapses on its own
            hold_ttl_s = max((pool.timeouts.total_s for pool in settings.pools.values()), default=600.0) + 60
            budgets = (
                RedisBudgets(
                    redis.url,
                    bookkeeper.spent,
                    prefix=redis.prefix,
                    fail_open=redis.failure_mode == "open",
                    timeout_s=redis.timeout_s,
                    hold_ttl_s=hold_ttl_s,
                    settle_delay_s=redis.settle_gather_s,
                    gather=others_in_flight,
                    lag=lag,
                )
                if redis.url
                else LocalBudgets(bookkeeper.spent)
            )
        registry = CollectorRegistry(auto_describe=True)
        metrics = RequestMetrics(registry, tenant_labels=settings.metrics.tenant_labels)
        admitter = Admitter(authenticator, limiter, budgets, book, metrics)
        # a connection to a replica for every request the door may let in (fewer would fail the excess with
        # a pool timeout, read as our own shortage); never fewer than the transport's default
        http = EngineHTTP.create(
            transport, connections_per_origin=max(512, settings.server.max_concurrent_requests)
        )
        server = settings.server
        queues = TierQueues(
            door,
            server.tier_shares,
            server.max_queue_wait_s,
            max_queued=server.max_queued,
            lag=lag if server.concurrency == "adaptive" else None,
            # deliberations squeezed before the door's limit falls
            target_lag_s=server.target_loop_lag_s / 2,
            target_utilization=server.target_utilization * 0.9,
        )
        # the streams' share of a turn of the loop (engines/turns.py): a burst of tokens holds up no request
        turns = (
            Turns(server.stream_turn_s, streams=server.stream_turn_streams) if server.stream_turn_s else None
        )
        pools = {
            name: _pool(name, pool, http, door, metrics, lag, turns) for name, pool in settings.pools.items()
        }
        for name, pool in pools.items():
            metrics.watch_replicas(name, (replica.url for replica in pool.replicas))
        tracing = _tracing(settings, pools)
        proxy = InferenceProxy(
            catalog,
            pools,
            sinks or (),
            admitter,
            book,
            bookkeeper,
            max_body_bytes=settings.server.max_body_bytes,
            metrics=metrics,
            queues=queues,
            priority_pools=frozenset(name for name, pool in settings.pools.items() if pool.priority),
            tracing=tracing,
            waits=lag,
        )
        collector = GatewayCollector(pools, bookkeeper)
        registry.register(collector)
        door_collector = DoorCollector(door, lag, queues, turns)
        registry.register(door_collector)
        store = _response_store(settings, database, lag)
        return cls(
            settings,
            catalog,
            pools,
            http,
            proxy,
            admitter,
            limiter,
            budgets,
            database,
            keys,
            authenticator,
            bookkeeper,
            registry,
            collector,
            door,
            ResponsesAPI(proxy, store),
            store,
            lag,
            door_collector,
            queues,
            await Console.open(settings, database),
            tracing,
        )

    def start(self) -> None:
        self.lag.start()
        for pool in self.pools.values():
            pool.start()
        if self.authenticator is not None:
            self.authenticator.start()
        if self.bookkeeper is not None:
            self.bookkeeper.start()

    async def aclose(self) -> None:
        """Close everything, each part even when another failed to close."""
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self.http.aclose)
            if self.tracing is not None:  # last: the spans of requests ended while closing are exported
                stack.push_async_callback(self.tracing.aclose)
            if self.database is not None:
                stack.push_async_callback(self.database.aclose)
            if self.response_store is not None:  # before the database: its last saves go into it
                stack.push_async_callback(self.response_store.aclose)
            if self.bookkeeper is not None:
                stack.push_async_callback(self.bookkeeper.aclose)  # before the database: it drains into it
            stack.push_async_callback(self.limiter.aclose)
            if self.budgets is not None:
                stack.push_async_callback(self.budgets.aclose)
            if self.authenticator is not None:
                stack.push_async_callback(self.authenticator.aclose)  # flushes last-used times
            for pool in self.pools.values():
                stack.push_async_callback(pool.aclose)
            stack.push_async_callback(self.lag.aclose)

    @property
    def ready(self) -> bool:
        """Every pool has a replica to serve, and the door is not shedding (a balancer steers away)."""
        return all(pool.ready for pool in self.pools.values()) and not self.door.saturated


def price_book(settings: Settings, catalog: Catalog) -> PriceBook | None:
    """The configured price book, refused at start if it cannot price every model the gateway offers."""
    path = settings.pricing.book
    if path is None:
        return None
    offers: dict[str, set[str]] = {}
    for offer in catalog.offers:
        # the cascade is priced by its stages, at the model's fast and deliberate prices
        tiers = ("fast", "deliberate") if offer.cascade is not None else (offer.tier.value,)
        offers.setdefault(offer.model, set()).update(tiers)
    try:
        book = load_price_book(path)
        book.check_coverage(offers)
    except (PricingError, OSError) as exc:
        raise ConfigError(f"pricing.book: {exc}") from None
    return book


def _tracing(settings: Settings, pools: Mapping[str, EnginePool]) -> Tracing | None:
    if not settings.tracing.enabled:
        return None
    # imported only when on: a gateway without traces does not load the OpenTelemetry SDK at all
    from gateway.accounting.tracing import Tracing

    try:
        release = version("tiergate")
    except PackageNotFoundError:
        release = "unknown"
    engines = {name: pool.engine for name, pool in settings.pools.items()}
    replicas = [replica.url for pool in pools.values() for replica in pool.replicas]
    return Tracing.create(settings.tracing, engines, replicas, release)


def _response_store(settings: Settings, database: Database | None, lag: LoopLag) -> ResponseStore | None:
    """Stored responses, in the gateway's database; opened on first use where nothing else needs one."""
    if not settings.responses.store:
        return None
    retention_s = settings.responses.retention_days * 86_400

    async def opened() -> Database:
        return await open_database(
            settings.database.url,
            connect_timeout_s=settings.database.connect_timeout_s,
            statement_timeout_s=settings.database.statement_timeout_s,
            lag=lag,
        )

    return ResponseStore(database if database is not None else opened, retention_s=retention_s)


def _door(settings: Settings, lag: LoopLag) -> Door:
    server = settings.server
    adaptive = None
    if server.concurrency == "adaptive":
        adaptive = AdaptiveLimit(
            server.max_concurrent_requests,
            target_s=server.target_loop_lag_s,
            target_utilization=server.target_utilization,
            target_wait_s=server.target_wait_s,
        )
    return Door(server.max_concurrent_requests, lag=lag, shed_lag_s=server.shed_loop_lag_s, adaptive=adaptive)


def _pool(
    name: str,
    settings: PoolSettings,
    http: EngineHTTP,
    door: Door,
    metrics: RequestMetrics,
    lag: LoopLag,
    turns: Turns | None,
) -> EnginePool:
    timeouts = settings.timeouts.timeouts()
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    adapter = TrtllmEngine if settings.engine == "trtllm" else OpenAICompatEngine
    engines = [adapter(str(url), http, timeouts, api_key=api_key) for url in settings.replicas]
    policy = settings.policy()
    # a shortage of ours sheds load; an engine request stopped before its end is counted (vLLM counts none)
    return EnginePool(
        name,
        engines,
        policy,
        on_local_overload=door.shut,
        on_abort=metrics.engine_aborted,
        lag=lag,
        turns=turns,
    )
