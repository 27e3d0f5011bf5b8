"""A pool of replicas of one engine: routing, passive ejection, active health checks, failover."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from engines._exceptions import EngineError, EngineTimeout, LocalOverload, NoReplicaAvailable
from engines.client import EngineClient, EngineReply, Headers
from engines.engine_stats import EngineStats
from engines.loop_lag import LoopLag
from engines.pooled_stream import PooledStream
from engines.routing import (
    HashRing,
    ReplicaState,
    RoutingPolicy,
    choose,
    key_point,
    routable,
    score,
)
from engines.stats_parsers import PARSERS
from engines.turns import Turns

__all__ = ["EnginePool", "PoolPolicy", "Replica"]

log = logging.getLogger("tiergate.engines")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    max_attempts: int = 3  # replicas tried for one request, failover included
    eject_after_failures: int = 3  # consecutive failures that open the circuit
    cooldown_s: float = 10.0  # how long an ejected replica rests before it is tried again
    health_interval_s: float = 5.0
    health_timeout_s: float = 2.0
    # load-aware routing and prefix affinity (docs/routing.md), from each replica's /metrics
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    scrape_interval_s: float = 1.5  # 0 turns scraping off
    scrape_timeout_s: float = 1.0
    metrics_family: str = "vllm"  # which parser reads the engines' metrics (engines/engine_stats.py)


class Replica:
    """One engine replica and what the pool knows of it."""

    __slots__ = ("answered_at", "ejected_until", "engine", "failures", "healthy", "outstanding", "stats")

    def __init__(self, engine: EngineClient) -> None:
        self.engine = engine
        self.outstanding = 0
        self.failures = 0
        self.healthy: bool | None = None
        self.ejected_until = 0.0
        self.stats: EngineStats | None = None  # the last successful scrape of its /metrics
        self.answered_at = -float("inf")  # when a real request last succeeded there (passive health)

    @property
    def url(self) -> str:
        return self.engine.url

    def state(self) -> ReplicaState:
        stats = self.stats
        if stats is None:
            return ReplicaState(self.outstanding, self.healthy, self.ejected_until)
        return ReplicaState(
            self.outstanding,
            self.healthy,
            self.ejected_until,
            stats.running,
            stats.waiting,
            stats.kv_usage,
            stats.scraped_at,
        )


class EnginePool:
    def __init__(
        self,
        name: str,
        engines: Sequence[EngineClient],
        policy: PoolPolicy = PoolPolicy(),
        *,
        clock: Callable[[], float] = time.monotonic,
        on_local_overload: Callable[[], None] | None = None,
        on_abort: Callable[[str, str], None] | None = None,
        lag: LoopLag | None = None,
        turns: Turns | None = None,
    ) -> None:
        """`on_local_overload` is called each time a call or a health check could not be made for a shortage
        of this process's own (`LocalOverload`): the caller may shed load. `on_abort(pool, replica)` is called
        each time a request is stopped before the engine finished it - a stream closed before its end, a call
        cancelled while the engine works on it - which the engine aborts (vLLM counts no abort itself); not
        for a request the engine failed. `lag`: this process's event-loop lag; with it, a health check or an
        engine timeout that our own busy loop made late is not held against the replica. `turns`: the streams'
        share of each turn of the loop (engines.turns), which this pool's streams keep to."""
        if not engines:
            raise ValueError(f"pool {name!r} needs at least one replica")
        self.name = name
        self.replicas = [Replica(engine) for engine in engines]
        self._policy = policy
        self._clock = clock
        self._on_local_overload = on_local_overload
        self._on_abort = on_abort
        self._lag = lag
        self._turns = turns
        self._turn = itertools.count()
        self._routing = policy.routing
        parser = PARSERS.get(policy.metrics_family)
        if parser is None:
            raise ValueError(
                f"no metrics parser for engine family {policy.metrics_family!r}: {sorted(PARSERS)}"
            )
        self._parse_metrics = parser
        self._ring = HashRing([replica.url for replica in self.replicas])
        self._health_task: asyncio.Task[None] | None = None
        self._scrape_task: asyncio.Task[None] | None = None

    def now(self) -> float:
        """The pool's clock (monotonic seconds): what routing and health compare against."""
        return self._clock()

    # -- requests ---------------------------------------------------------------------------------
    async def complete(
        self,
        path: str,
        payload: bytes,
        *,
        request_id: str,
        affinity: str | None = None,
        headers: Headers = (),
    ) -> EngineReply:
        """`affinity`: a key (engines/affinity.py) that sends requests sharing it to the same replica, so
        that its prefix cache serves them; None routes on load alone. `headers`: more to send (every
        attempt, failover included)."""
        replica, reply = await self._with_failover(
            lambda engine: engine.complete(path, payload, request_id=request_id, headers=headers), affinity
        )
        replica.outstanding -= 1
        self._succeeded(replica)
        return reply

    async def stream(
        self,
        path: str,
        payload: bytes,
        *,
        request_id: str,
        affinity: str | None = None,
        headers: Headers = (),
    ) -> PooledStream:
        """Open a stream, failing over while its first event has not arrived (so nothing has
        reached the client). The replica counts it as outstanding until the stream is closed."""
        replica, stream = await self._with_failover(
            lambda engine: engine.stream(path, payload, request_id=request_id, headers=headers), affinity
        )
        return PooledStream(self, replica, stream, self._turns)

    async def _with_failover(
        self, call: Callable[[EngineClient], Awaitable[_T]], affinity: str | None = None
    ) -> tuple[Replica, _T]:
        """Run `call` on the best replica, then on others while the failure is retryable. The replica
        that answered is returned with the request still counted as outstanding there."""
        tried: set[int] = set()
        point = key_point(affinity) if affinity is not None else None
        while True:
            index = self._pick(tried, point)
            replica = self.replicas[index]
            replica.outstanding += 1
            try:
                return replica, await call(replica.engine)
            except EngineError as exc:
                replica.outstanding -= 1
                self._failed(replica, exc)
                tried.add(index)
                if not self._may_retry(exc, tried):
                    raise
                log.warning("pool %s: %s failed (%s); failing over", self.name, replica.url, exc.message)
            except BaseException as exc:
                replica.outstanding -= 1
                if isinstance(exc, asyncio.CancelledError):
                    self.aborted(replica)
                raise

    def replica(self, url: str) -> Replica | None:
        return next((replica for replica in self.replicas if replica.url == url), None)

    def _pick(self, tried: set[int], affinity: int | None = None) -> int:
        now = self._clock()
        index = choose(
            [replica.state() for replica in self.replicas],
            now,
            policy=self._routing,
            exclude=tried,
            start=next(self._turn),
            affinity=affinity,
            ring=self._ring,
        )
        if index is None:
            raise NoReplicaAvailable(
                f"no healthy replica in the {self.name!r} pool", retry_after_s=self._retry_after(now)
            )
        return index

    def _may_retry(self, exc: EngineError, tried: set[int]) -> bool:
        return exc.retryable and len(tried) < min(self._policy.max_attempts, len(self.replicas))

    def _retry_after(self, now: float) -> float:
        waits = [replica.ejected_until - now for replica in self.replicas if replica.ejected_until > now]
        return max(1.0, min(waits)) if waits else self._policy.health_interval_s

    # -- passive health (circuit breaker) ---------------------------------------------------------
    def _failed(self, replica: Replica, exc: EngineError) -> None:
        if isinstance(exc, LocalOverload):
            self._local_overload()
            return  # the gateway's own shortage, not the replica's
        if not exc.retryable:
            return  # the request's fault, not the replica's
        if isinstance(exc, EngineTimeout) and self._lag is not None and self._lag.saturated:
            return  # our loop ran late: the timeout is evidence about us, not the replica
        replica.failures += 1
        if replica.failures >= self._policy.eject_after_failures:
            replica.ejected_until = self._clock() + self._policy.cooldown_s
            log.warning("pool %s: ejecting %s for %.1fs", self.name, replica.url, self._policy.cooldown_s)

    def _succeeded(self, replica: Replica) -> None:
        replica.answered_at = self._clock()
        if replica.failures:
            replica.failures = 0
            replica.ejected_until = 0.0

    def _local_overload(self) -> None:
        if self._on_local_overload is not None:
            self._on_local_overload()

    def stream_closed(self, replica: Replica, error: EngineError | None, *, ended: bool = True) -> None:
        replica.outstanding -= 1
        if error is None:
            self._succeeded(replica)
            if not ended:
                self.aborted(replica)
        else:
            self._failed(replica, error)

    def aborted(self, replica: Replica) -> None:
        """A request stopped before the engine finished it (the engine aborts it)."""
        if self._on_abort is not None:
            self._on_abort(self.name, replica.url)

    # -- active health ----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """At least one replica passed its last health check and is not ejected."""
        now = self._clock()
        return any(replica.healthy is True and routable(replica.state(), now) for replica in self.replicas)

    async def check_health(self) -> None:
        """Ask every replica's /health. A check that timed out is a failed check only on evidence about the
        replica: not when our loop's lag made it late (`LoopLag.deadline`, inconclusive), nor when the
        replica answered a real request since the previous check (passive health counts)."""
        timeout_s = self._policy.health_timeout_s
        interval_s = self._policy.health_interval_s
        fresh_s = interval_s + timeout_s

        async def check(replica: Replica) -> None:
            started = self._clock()
            late = None if self._lag is None else self._lag.deadline(timeout_s, at_most=interval_s)
            try:
                async with asyncio.timeout(timeout_s) if late is None else late:
                    healthy = await replica.engine.health()
            except TimeoutError:
                if late is not None and late.inconclusive:
                    return  # the check could not run on time: it says nothing of the replica
                if started - replica.answered_at < fresh_s and replica.healthy is not False:
                    return  # it served real requests a moment ago: one slow /health is no evidence
                healthy = False
            except LocalOverload:
                self._local_overload()
                return  # a check this process could not make says nothing of the replica
            if healthy != replica.healthy:
                log.info("pool %s: %s is %s", self.name, replica.url, "healthy" if healthy else "unhealthy")
            replica.healthy = healthy

        await asyncio.gather(*(check(replica) for replica in self.replicas))

    def start(self) -> None:
        if self._health_task is None:
            self._health_task = asyncio.create_task(self._health_loop(), name=f"health:{self.name}")
        if self._scrape_task is None and self._policy.scrape_interval_s > 0:
            self._scrape_task = asyncio.create_task(self._scrape_loop(), name=f"scrape:{self.name}")

    async def aclose(self) -> None:
        tasks = (self._health_task, self._scrape_task)
        self._health_task = self._scrape_task = None
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _health_loop(self) -> None:
        while True:
            try:
                await self.check_health()
            except Exception:  # a checker that dies would leave stale health forever
                log.exception("pool %s: health check failed", self.name)
            await asyncio.sleep(self._policy.health_interval_s)

    # -- engine stats (load-aware routing) --------------------------------------------------------
    async def scrape_stats(self) -> None:
        """Read every replica's /metrics once, concurrently, each bounded by `scrape_timeout_s`. A replica
        that does not answer (or answers nothing readable) keeps its previous stats, which age out of
        routing after `stale_after_s`."""

        async def scrape(replica: Replica) -> None:
            try:
                async with asyncio.timeout(self._policy.scrape_timeout_s):
                    text = await replica.engine.metrics_text()
            except TimeoutError:
                return
            if text is not None:
                replica.stats = self._parse_metrics(text, self._clock())

        await asyncio.gather(*(scrape(replica) for replica in self.replicas))

    async def _scrape_loop(self) -> None:
        while True:
            try:
                await self.scrape_stats()
            except Exception:  # a scraper that dies would leave stale stats forever
                log.exception("pool %s: scraping engine metrics failed", self.name)
            await asyncio.sleep(self._policy.scrape_interval_s)

    def fresh_stats(self, replica: Replica, now: float) -> EngineStats | None:
        """The replica's stats if routing would use them at `now`."""
        stats = replica.stats
        if stats is None or now - stats.scraped_at > self._routing.stale_after_s:
            return None
        return stats

    def routing_score(self, replica: Replica, now: float) -> float:
        """The load routing sees on the replica at `now` (engines/routing.py `score`)."""
        return score(replica.state(), now, self._routing)

    def spec_decode_acceptance(self) -> float | None:
        """Accepted / draft tokens of speculative decoding over the pool's replicas, cumulative since the
        engines started, from their last scrapes; None when no replica reported a draft token."""
        drafted = accepted = 0.0
        for replica in self.replicas:
            stats = replica.stats
            if stats is not None and stats.spec_draft_tokens and stats.spec_accepted_tokens is not None:
                drafted += stats.spec_draft_tokens
                accepted += stats.spec_accepted_tokens
        return accepted / drafted if drafted > 0 else None
