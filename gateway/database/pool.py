"""PostgreSQL connections of one process: a few, made on demand, every wait bounded, an outage told once.

Not psycopg_pool, which an outage showed at its worst: while the server was down every caller waited the
pool's whole timeout for a connection; its background reconnection backs off exponentially, so service
came back long after the server did; its connection check has no bound, so a hung server holds its caller
for ever; and psycopg spends up to 10 s asking a server to cancel a cancelled query. Here:

- a connection is made when a caller needs one and none is idle, within `connect_timeout_s`;
- once a connect fails the pool is down: callers fail at once with DatabaseUnavailable while one of them
  tries again every `retry_s`, and the first connect that succeeds ends the outage: service resumes
  within `retry_s` of the server's return;
- one use of a connection (a statement, or a transaction) is bounded by `use_timeout_s`: past it the
  connection is closed under the statement, with no cancel request to a server that may be hung, and the
  caller gets DatabaseUnavailable;
- the outage is logged when it begins and when it ends, never once per caller;
- with the worker's loop lag (`lag`), these bounds count only the time the loop was free to read the
  server's answer (`engines.loop_lag`): a saturated gateway does not take its own lateness for an outage.
  A connect that ran out of time only because the loop was late fails its caller without declaring the
  server down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row

from engines.loop_lag import LoopLag
from gateway.database._exceptions import DatabaseUnavailable

__all__ = ["Connection", "ConnectionPool", "describe"]

log = logging.getLogger("tiergate.database")

Connection = psycopg.AsyncConnection[DictRow]
# A connection used this recently is handed out without a round trip to check it: one broken in between
# fails its statement (DatabaseUnavailable), and one idle across a server restart (which takes longer) is
# checked first.
_CHECK_AFTER_IDLE_S = 1.0


class ConnectionPool:
    """At most `max_size` connections in autocommit mode with rows as dicts; `connection()` lends one."""

    def __init__(
        self,
        conninfo: str,
        *,
        display: str,
        max_size: int = 4,
        connect_timeout_s: float = 1.0,
        use_timeout_s: float = 30.0,
        retry_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        lag: LoopLag | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size}")
        if min(connect_timeout_s, use_timeout_s, retry_s) <= 0:
            raise ValueError("connect_timeout_s, use_timeout_s and retry_s must be positive")
        self._conninfo = conninfo
        self._display = display  # the URL without its password, for messages
        self._max_size = max_size
        self._connect_timeout_s = connect_timeout_s
        self._use_timeout_s = use_timeout_s
        self._retry_s = retry_s
        self._clock = clock
        self._lag = lag
        self._slots = asyncio.Semaphore(max_size)
        self._idle: list[tuple[Connection, float]] = []  # with when each was returned; the newest last
        self._down: DatabaseUnavailable | None = None  # the failure that began the outage
        self._down_since = 0.0
        self._retry_at = 0.0
        self._refused = 0  # callers failed at once during this outage
        self._closed = False

    def __repr__(self) -> str:
        return f"ConnectionPool({self._display!r}, idle={len(self._idle)}, down={self._down is not None})"

    @property
    def down(self) -> bool:
        return self._down is not None

    async def open(self, timeout_s: float) -> None:
        """Make a first connection, trying again until `timeout_s` is over: a gateway starting beside its
        database waits a little for it."""
        deadline = self._clock() + timeout_s
        while True:
            try:
                connection = await self._connect()
            except DatabaseUnavailable as exc:
                if self._clock() + self._retry_s >= deadline:
                    raise DatabaseUnavailable(
                        f"cannot connect to {self._display} within {timeout_s:g}s: {exc}"
                    ) from None
                await asyncio.sleep(self._retry_s)
            else:
                self._idle.append((connection, self._clock()))
                return

    @asynccontextmanager
    async def connection(self, *, bounded: bool = True) -> AsyncIterator[Connection]:
        """A connection for one use, `use_timeout_s` at most, waiting for a free one included (a use that is
        not `bounded` takes as long as it takes). Raises DatabaseUnavailable when none can be had or the use
        overran (the connection is then closed)."""
        if self._closed:
            raise DatabaseUnavailable(f"the pool of {self._display} is closed")
        held: list[Connection] = []
        try:
            async with (
                _deadline(self._use_timeout_s if bounded else None, held, self._lag) as deadline,
                self._slots,
            ):
                connection = await self._checkout()
                held.append(connection)
                try:
                    yield connection
                finally:
                    self._checkin(connection)
        except Exception:  # what a cut connection raises: TimeoutError, or psycopg's error if it came first
            if not deadline.cut:
                raise
            late = " (this worker's loop ran late)" if deadline.inconclusive else ""
            raise DatabaseUnavailable(
                f"postgresql: {self._display} did not answer within {self._use_timeout_s:g}s{late}"
            ) from None

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            await connection.close()

    # -- internals --------------------------------------------------------------------------------------
    async def _checkout(self) -> Connection:
        while self._idle:
            connection, returned = self._idle.pop()
            if self._clock() - returned < _CHECK_AFTER_IDLE_S:
                return connection
            try:
                async with _deadline(self._connect_timeout_s, [connection], self._lag):
                    await connection.execute("")
            except (psycopg.Error, TimeoutError):
                connection.pgconn.finish()  # broken (a server restart, say): the next one, or a new one
                continue
            except BaseException:  # the caller's deadline, or a cancellation: nobody holds it now
                connection.pgconn.finish()
                raise
            return connection
        now = self._clock()
        if self._down is not None and now < self._retry_at:
            self._refused += 1
            raise DatabaseUnavailable(f"{self._down} (unreachable for {now - self._down_since:.1f}s)")
        # while down, the callers arriving during this attempt fail at once: one tries, not all of them
        self._retry_at = now + self._retry_s
        try:
            connection = await self._connect()
        except _Late:  # our loop's lateness, not the server's: no outage, the next caller tries again
            self._retry_at = now
            raise
        except DatabaseUnavailable as exc:
            self._went_down(exc)
            raise
        self._came_back()
        return connection

    def _checkin(self, connection: Connection) -> None:
        status = connection.pgconn.transaction_status
        if self._closed or connection.closed or status != TransactionStatus.IDLE:
            connection.pgconn.finish()  # broken, cut by its deadline, or left mid-transaction
            return
        self._idle.append((connection, self._clock()))

    async def _connect(self) -> Connection:
        try:
            async with _deadline(self._connect_timeout_s, [], self._lag) as deadline:
                return await Connection.connect(self._conninfo, autocommit=True, row_factory=dict_row)
        except Exception as exc:
            if not deadline.cut:
                if isinstance(exc, psycopg.Error):
                    raise DatabaseUnavailable(f"postgresql: {describe(exc)}") from exc
                raise
            if deadline.inconclusive:
                raise _Late(
                    f"postgresql: no connection to {self._display} within {self._connect_timeout_s:g}s"
                    " of this worker's loop's free time (the loop ran late)"
                ) from None
            raise DatabaseUnavailable(
                f"postgresql: no connection to {self._display} within {self._connect_timeout_s:g}s"
            ) from None

    def _went_down(self, exc: DatabaseUnavailable) -> None:
        if self._down is None:
            self._down, self._down_since, self._refused = exc, self._clock(), 0
            log.error(
                "PostgreSQL at %s is unreachable (%s): its users fail at once, retrying every %gs",
                self._display,
                exc,
                self._retry_s,
            )

    def _came_back(self) -> None:
        if self._down is not None:
            log.warning(
                "PostgreSQL at %s is reachable again after %.1fs (%d uses refused meanwhile)",
                self._display,
                self._clock() - self._down_since,
                self._refused,
            )
            self._down = None


class _Late(DatabaseUnavailable):
    """A connect that ran out of time while the loop ran late: it says nothing of the server."""


@dataclass(slots=True)
class _Bound:
    """How a bounded use ended: `cut` once its deadline expired (its connections closed under it, whatever
    it raises next is the deadline's doing); `inconclusive` when that was for the loop's lag."""

    cut: bool = False
    inconclusive: bool = False


@asynccontextmanager
async def _deadline(
    seconds: float | None, held: list[Connection], lag: LoopLag | None = None
) -> AsyncIterator[_Bound]:
    """`asyncio.timeout(seconds)` that first closes the connections in `held`: psycopg answers a cancelled
    statement by asking the server to cancel it and waiting up to 10 s, which a hung server never grants;
    on a closed connection it gives up at once. None: no deadline. With `lag`, `seconds` counts only the
    loop's free time (`LoopLag.deadline`)."""
    bound = _Bound()
    if seconds is None:
        yield bound
        return

    def cut() -> None:
        bound.cut = True
        for connection in held:
            connection.pgconn.finish()

    if lag is not None:
        deadline = lag.deadline(seconds, on_expire=cut)
        async with deadline:
            try:
                yield bound
            finally:
                bound.inconclusive = deadline.inconclusive
        return
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as timeout:

        def expire() -> None:
            cut()
            timeout.reschedule(loop.time())

        handle = loop.call_later(seconds, expire)
        try:
            yield bound
        finally:
            handle.cancel()


def describe(exc: Exception) -> str:
    """An error's first line, for messages."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
