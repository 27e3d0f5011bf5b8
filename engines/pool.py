"""A pool of replicas of one engine: routing, passive ejection, active health checks, failover."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from engines._exceptions import EngineError, NoReplicaAvailable
from engines.client import EngineClient, EngineReply, EngineStream, StreamEvent
from engines.routing import ReplicaState, choose_replica, routable
from engines.usage import StreamTally, Usage

__all__ = ["EnginePool", "PoolPolicy", "PooledStream", "Replica"]

log = logging.getLogger("tiergate.engines")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    max_attempts: int = 3  # replicas tried for one request, failover included
    eject_after_failures: int = 3  # consecutive failures that open the circuit
    cooldown_s: float = 10.0  # how long an ejected replica rests before it is tried again
    health_interval_s: float = 5.0
    health_timeout_s: float = 2.0


class Replica:
    """One engine replica and what the pool knows of it."""

    __slots__ = ("ejected_until", "engine", "failures", "healthy", "outstanding")

    def __init__(self, engine: EngineClient) -> None:
        self.engine = engine
        self.outstanding = 0
        self.failures = 0
        self.healthy: bool | None = None
        self.ejected_until = 0.0

    @property
    def url(self) -> str:
        return self.engine.url

    def state(self) -> ReplicaState:
        return ReplicaState(self.outstanding, self.healthy, self.ejected_until)


class EnginePool:
    def __init__(
        self,
        name: str,
        engines: Sequence[EngineClient],
        policy: PoolPolicy = PoolPolicy(),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not engines:
            raise ValueError(f"pool {name!r} needs at least one replica")
        self.name = name
        self.replicas = [Replica(engine) for engine in engines]
        self._policy = policy
        self._clock = clock
        self._turn = itertools.count()
        self._health_task: asyncio.Task[None] | None = None

    # -- requests ---------------------------------------------------------------------------------
    async def complete(self, path: str, payload: bytes, *, request_id: str) -> EngineReply:
        replica, reply = await self._with_failover(
            lambda engine: engine.complete(path, payload, request_id=request_id)
        )
        replica.outstanding -= 1
        self._succeeded(replica)
        return reply

    async def stream(self, path: str, payload: bytes, *, request_id: str) -> PooledStream:
        """Open a stream, failing over while its first event has not arrived (so nothing has
        reached the client). The replica counts it as outstanding until the stream is closed."""
        replica, stream = await self._with_failover(
            lambda engine: engine.stream(path, payload, request_id=request_id)
        )
        return PooledStream(self, replica, stream)

    async def _with_failover(self, call: Callable[[EngineClient], Awaitable[_T]]) -> tuple[Replica, _T]:
        """Run `call` on the best replica, then on others while the failure is retryable. The replica
        that answered is returned with the request still counted as outstanding there."""
        tried: set[int] = set()
        while True:
            index = self._pick(tried)
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
            except BaseException:
                replica.outstanding -= 1
                raise

    def replica(self, url: str) -> Replica | None:
        return next((replica for replica in self.replicas if replica.url == url), None)

    def _pick(self, tried: set[int]) -> int:
        now = self._clock()
        index = choose_replica(
            [replica.state() for replica in self.replicas], now, exclude=tried, start=next(self._turn)
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
        if not exc.retryable:
            return  # the request's fault, not the replica's
        replica.failures += 1
        if replica.failures >= self._policy.eject_after_failures:
            replica.ejected_until = self._clock() + self._policy.cooldown_s
            log.warning("pool %s: ejecting %s for %.1fs", self.name, replica.url, self._policy.cooldown_s)

    def _succeeded(self, replica: Replica) -> None:
        if replica.failures:
            replica.failures = 0
            replica.ejected_until = 0.0

    def stream_closed(self, replica: Replica, error: EngineError | None) -> None:
        replica.outstanding -= 1
        if error is None:
            self._succeeded(replica)
        else:
            self._failed(replica, error)

    # -- active health ----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """At least one replica passed its last health check and is not ejected."""
        now = self._clock()
        return any(replica.healthy is True and routable(replica.state(), now) for replica in self.replicas)

    async def check_health(self) -> None:
        async def check(replica: Replica) -> None:
            try:
                async with asyncio.timeout(self._policy.health_timeout_s):
                    healthy = await replica.engine.health()
            except TimeoutError:
                healthy = False
            if healthy != replica.healthy:
                log.info("pool %s: %s is %s", self.name, replica.url, "healthy" if healthy else "unhealthy")
            replica.healthy = healthy

        await asyncio.gather(*(check(replica) for replica in self.replicas))

    def start(self) -> None:
        if self._health_task is None:
            self._health_task = asyncio.create_task(self._health_loop(), name=f"health:{self.name}")

    async def aclose(self) -> None:
        task, self._health_task = self._health_task, None
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


class PooledStream:
    """An engine stream that tells its pool when it ends, and how."""

    __slots__ = ("_closed", "_error", "_pool", "_stream", "replica")

    def __init__(self, pool: EnginePool, replica: Replica, stream: EngineStream) -> None:
        self._pool = pool
        self.replica = replica
        self._stream = stream
        self._error: EngineError | None = None
        self._closed = False

    @property
    def usage(self) -> Usage | None:
        return self._stream.usage

    @property
    def tally(self) -> StreamTally:
        return self._stream.tally

    @property
    def buffered(self) -> bool:
        return self._stream.buffered

    def __aiter__(self) -> PooledStream:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            return await self._stream.__anext__()
        except EngineError as exc:
            self._error = exc
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._stream.aclose()
        finally:
            self._pool.stream_closed(self.replica, self._error)
