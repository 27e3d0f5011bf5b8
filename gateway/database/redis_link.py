"""A gateway's connection to Redis for its hot-path scripts (rate limits, budgets): bounded calls, and an
outage counted and told in the log without flooding it.

Redis being down, slow or restarting must not take the gateway with it: every call is bounded by
`timeout_s`, failures are counted (`failures`, for metrics) and logged at most every few seconds, and the
connection pool reconnects by itself once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError

from engines.loop_lag import PATIENCE, Deadline, LoopLag
from gateway.database.resp import RespClient, supported

__all__ = ["UNAVAILABLE", "RedisLink", "SoonFlush"]

UNAVAILABLE = (RedisError, OSError, TimeoutError)  # what a call to an unreachable or failing Redis raises
_WARN_EVERY_S = 10.0  # an outage is worth a line every few seconds, not one per request


class RedisLink:
    """`redis` (the client) and `call` (a script, bounded); `failed` counts and tells an outage."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        max_connections: int,
        log: logging.Logger,
        user: str,  # who uses it, for the log: "rate limiter", "budgets"
        fail_open: bool,
        open_means: str,  # what failing open does, for the log: "letting requests through"
        lag: LoopLag | None = None,
    ) -> None:
        self.failures = 0
        self.timeout_s = timeout_s
        self._log = log
        self._user = user
        self._consequence = open_means if fail_open else "refusing requests"
        self._down = False
        self._warned_at = -math.inf
        # With the loop's lag, `timeout_s` counts only the time our loop was free to read the reply: a Redis
        # at 2% CPU waiting on our saturated loop is not an outage (up to PATIENCE x timeout_s of wall time).
        self._lag = lag
        socket_timeout_s = timeout_s if lag is None else timeout_s * PATIENCE
        # Not redis-py's BlockingConnectionPool: its waiting is costly on the hot path (docs/benchmarks.md,
        # "Figures behind design choices"). A call
        # holds a connection for one round trip, so even thousands of requests in flight need far fewer
        # connections than this bound; past it, a call fails (open or closed) rather than queue.
        pool = ConnectionPool.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            # One immediate retry, on a fresh connection, for a pooled one that died with a restarted
            # Redis; the default (exponential backoff, 3 retries) would hold a request far past timeout_s.
            retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
        )
        self.redis = Redis.from_pool(pool)  # the scripts' registry (`register_script`); other URLs: the calls
        # the calls themselves, on one pipelined connection of our own (gateway.database.resp), where it can
        self._resp = (
            RespClient(url, connect_timeout_s=socket_timeout_s, stall_s=socket_timeout_s)
            if supported(url)
            else None
        )

    async def call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        # The socket timeouts bound each connect and read; this bounds the whole call, pool wait and the
        # one retry included.
        async with self._deadline():
            if self._resp is not None and isinstance(script, AsyncScript):  # else a stand-in (tests)
                reply = await self._resp.evalsha(script, keys, args)
            else:
                reply = await script(keys=keys, args=args)
        self._answered()
        return reply

    async def settle(
        self, script: AsyncScript, calls: Iterable[tuple[list[str], list[Any]]], what: str
    ) -> bool:
        """Each (keys, args) call of `script`, in one pipeline bounded by `timeout_s`; False when Redis did
        not answer (`failed`: the calls may have run or not, and may run later). Never raises: settlements
        run as requests end, where raising would hide the real outcome; an error Redis answered is logged
        (`what`: the batch, for the log) and counts as done: sent again, it would fail the same way."""
        try:
            if self._resp is not None and isinstance(script, AsyncScript):
                async with self._deadline():
                    replies = await self._resp.evalsha_many(script, list(calls))
                errors = [reply for reply in replies if isinstance(reply, ResponseError)]
                if errors:  # as a pipeline raises: the first error
                    raise errors[0]
            else:
                async with self._deadline(), self.redis.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        await script(keys=keys, args=args, client=pipe)
                    await pipe.execute()
        except ResponseError as exc:  # Redis answered, with an error (a bug): sent again, it would fail again
            if isinstance(exc, ReadOnlyError):  # a replica, during a failover: not for long
                self.failed("settle", exc)
                return False
            self._log.exception("%s: settling %s failed", self._user, what)
        except UNAVAILABLE as exc:
            self.failed("settle", exc)
            return False
        except Exception:
            self._log.exception("%s: settling %s failed", self._user, what)
        else:
            self._answered()
        return True

    async def ping(self) -> bool:
        """Whether Redis answers a PING within `timeout_s`."""
        try:
            async with self._deadline():
                if self._resp is not None:
                    await self._resp.execute("PING")
                else:
                    await self.redis.ping()
        except UNAVAILABLE as exc:
            self.failed("ping", exc)
            return False
        self._answered()
        return True

    def _deadline(self) -> asyncio.Timeout | Deadline:
        return asyncio.timeout(self.timeout_s) if self._lag is None else self._lag.deadline(self.timeout_s)

    def _answered(self) -> None:
        if self._down:
            self._down = False
            self._log.warning(
                "%s: Redis is reachable again (%d failed calls so far)", self._user, self.failures
            )

    def failed(self, operation: str, exc: BaseException) -> None:
        self.failures += 1
        self._down = True
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            self._log.warning(
                "%s: Redis unavailable on %s (%r); %s (%d failed calls so far)",
                self._user,
                operation,
                exc,
                self._consequence,
                self.failures,
            )

    async def aclose(self) -> None:
        if self._resp is not None:
            await self._resp.aclose()
        await self.redis.aclose()


class SoonFlush:
    """Runs `flush` once, `delay_s` after the first `kick()` since the last run (0: as soon as the loop is
    free): settlements of many requests go out together, in one pipeline. With `only_if`, the run waits
    `delay_s` only when it says so as the run starts, and goes at once otherwise. `kick()` returns a future
    done when that run has ended (whether Redis answered or not), for a request that must see its own
    settlement land before its response ends. `stop()` cancels a pending run (the owner flushes itself
    after)."""

    def __init__(
        self,
        delay_s: float,
        flush: Callable[[], Awaitable[None]],
        *,
        only_if: Callable[[], bool] | None = None,
    ) -> None:
        self._delay_s = delay_s
        self._only_if = only_if
        self._flush = flush
        self._task: asyncio.Task[None] | None = None
        self._ran: asyncio.Future[None] | None = None

    def kick(self) -> asyncio.Future[None]:
        if self._task is None or self._ran is None:
            loop = asyncio.get_running_loop()
            self._ran = loop.create_future()
            self._task = loop.create_task(self._soon(self._ran))
        return self._ran

    async def stop(self) -> None:
        task, self._task = self._task, None
        ran, self._ran = self._ran, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if ran is not None and not ran.done():
            ran.set_result(None)  # the owner flushes what was pending itself

    async def _soon(self, ran: asyncio.Future[None]) -> None:
        try:
            try:
                if self._delay_s > 0 and (self._only_if is None or self._only_if()):
                    await asyncio.sleep(self._delay_s)
            finally:
                self._task = self._ran = None
            await self._flush()
        finally:
            if not ran.done():
                ran.set_result(None)
