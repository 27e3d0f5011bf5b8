"""SQLite through the standard library: one connection, one thread, statements in order.

`sqlite3` blocks, so every call runs on a dedicated single-thread executor: the event loop never waits
on the disk, and the connection is only ever used from that one thread, in submission order (which is
what keeps a cancelled caller's statement from landing inside someone else's transaction). An asyncio
lock groups a transaction's statements so no other task's statement runs between them.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from gateway.database._exceptions import DatabaseError, DatabaseUnavailable, IntegrityError
from gateway.database.base import Database, Dialect, Params, Queries, Row

__all__ = ["SQLiteDatabase"]

_T = TypeVar("_T")
_RETRYABLE = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL"}
_FOREVER_MS = 2**31 - 1  # the longest busy timeout SQLite takes (24 days)


class SQLiteDatabase(Database):
    dialect: Dialect = "sqlite"

    def __init__(self, connection: sqlite3.Connection, executor: ThreadPoolExecutor, path: str) -> None:
        self._connection = connection
        self._executor = executor
        self._lock = asyncio.Lock()
        self._transaction_owner: asyncio.Task[Any] | None = None
        self._closed = False
        self.path = path

    def __repr__(self) -> str:
        return f"SQLiteDatabase({self.path!r})"

    @classmethod
    async def open(cls, path: str, *, busy_timeout_s: float = 5.0) -> SQLiteDatabase:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiergate-sqlite")
        try:
            connection = await _on(executor, _connect, path, busy_timeout_s)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(connection, executor, path)

    # -- Queries ----------------------------------------------------------------------------------
    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._alone():
            return await self._run(_execute, self._connection, sql, params)

    async def execute_many(self, sql: str, params: Iterable[Params]) -> None:
        # one transaction in one trip to the thread (BEGIN, the rows, COMMIT; ROLLBACK on failure): it
        # ends in the thread even when the caller is cancelled, and costs one hop, not three
        rows = [_adapt(p) for p in params]
        async with self._alone():
            await asyncio.shield(self._run(_transact_many, self._connection, sql, rows))

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._alone():
            return await self._run(_fetch_all, self._connection, sql, params)

    # -- Database ---------------------------------------------------------------------------------
    def transaction(self) -> AbstractAsyncContextManager[Queries]:
        return self._transaction(wait_for_lock=False)

    def _migration_transaction(self) -> AbstractAsyncContextManager[Queries]:
        # BEGIN IMMEDIATE takes the database's write lock, across processes too
        return self._transaction(wait_for_lock=True)

    @asynccontextmanager
    async def _transaction(self, *, wait_for_lock: bool) -> AsyncIterator[Queries]:
        async with self._alone():
            self._transaction_owner = asyncio.current_task()
            handle = _Transaction(self)
            try:
                await self._run(_begin, self._connection, wait_for_lock)
                yield handle
                await self._end("COMMIT")
            except BaseException:
                # also when BEGIN itself was cancelled: it may still have run in the thread
                await self._end("ROLLBACK")
                raise
            finally:
                handle.open = False
                self._transaction_owner = None

    async def aclose(self) -> None:
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            await self._run(self._connection.close)
        self._executor.shutdown(wait=False)

    # -- plumbing ---------------------------------------------------------------------------------
    @asynccontextmanager
    async def _alone(self) -> AsyncIterator[None]:
        if self._transaction_owner is not None and self._transaction_owner is asyncio.current_task():
            # the lock is not reentrant: waiting for it here would wait forever
            raise RuntimeError("inside db.transaction(), run statements through the handle it yields")
        async with self._lock:
            yield

    async def _run(self, call: Callable[..., _T], *args: Any) -> _T:
        return await _on(self._executor, call, *args)

    async def _end(self, statement: str) -> None:
        # shielded: a second cancellation must not stop COMMIT/ROLLBACK from being queued, or the next
        # transaction would find this one still open; queued behind whatever this one left running
        job = asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(_translated_call, _end, self._connection, statement)
        )
        await asyncio.shield(job)


class _Transaction(Queries):
    """The handle `SQLiteDatabase.transaction()` yields; the database's lock is held while it is open."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db
        self.open = True

    async def execute(self, sql: str, params: Params = ()) -> int:
        self._check()
        return await self._db._run(_execute, self._db._connection, sql, params)

    async def execute_many(self, sql: str, params: Iterable[Params]) -> None:
        self._check()
        await self._db._run(_execute_many, self._db._connection, sql, [_adapt(p) for p in params])

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        self._check()
        return await self._db._run(_fetch_all, self._db._connection, sql, params)

    def _check(self) -> None:
        if not self.open:
            raise RuntimeError("this transaction has ended")


# -- in the executor's thread ----------------------------------------------------------------------
async def _on(executor: ThreadPoolExecutor, call: Callable[..., _T], *args: Any) -> _T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(_translated_call, call, *args))


def _translated_call(call: Callable[..., _T], *args: Any) -> _T:
    with _translated():
        return call(*args)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(str(exc)) from exc
    except sqlite3.Error as exc:
        name = getattr(exc, "sqlite_errorname", "")  # e.g. SQLITE_BUSY_SNAPSHOT: a BUSY, extended
        if any(name == base or name.startswith(base + "_") for base in _RETRYABLE):
            raise DatabaseUnavailable(f"sqlite: {exc}") from exc
        raise DatabaseError(f"sqlite: {exc}") from exc


def _connect(path: str, busy_timeout_s: float) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; ours are explicit BEGIN IMMEDIATE ... COMMIT
    connection = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        if path != ":memory:":
            # readers never block the writer (other processes and replicas included)
            connection.execute("PRAGMA journal_mode = WAL")
    except BaseException:
        connection.close()
        raise
    return connection


def _adapt(params: Params) -> tuple[Any, ...]:
    return tuple(_adapt_value(value) for value in params)


def _adapt_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value.isoformat()} has no time zone")
        # fixed width, always UTC: text order is time order, so range queries and comparisons work
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def _execute(connection: sqlite3.Connection, sql: str, params: Params) -> int:
    cursor = connection.execute(sql, _adapt(params))
    try:
        return cursor.rowcount
    finally:
        cursor.close()


def _begin(connection: sqlite3.Connection, wait_for_lock: bool) -> None:
    if not wait_for_lock:  # another writer's lock is waited for up to the busy timeout
        connection.execute("BEGIN IMMEDIATE")
        return
    (busy_timeout_ms,) = connection.execute("PRAGMA busy_timeout").fetchone()
    connection.execute(f"PRAGMA busy_timeout = {_FOREVER_MS}")
    try:
        connection.execute("BEGIN IMMEDIATE")  # the only wait: once begun, the write lock is ours
    finally:
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")


def _end(connection: sqlite3.Connection, statement: str) -> None:
    if connection.in_transaction:
        connection.execute(statement)


def _execute_many(connection: sqlite3.Connection, sql: str, params: list[tuple[Any, ...]]) -> None:
    connection.executemany(sql, params).close()


def _transact_many(connection: sqlite3.Connection, sql: str, params: list[tuple[Any, ...]]) -> None:
    connection.execute("BEGIN IMMEDIATE")  # another writer's lock is waited for up to the busy timeout
    try:
        connection.executemany(sql, params).close()
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _fetch_all(connection: sqlite3.Connection, sql: str, params: Params) -> list[Row]:
    cursor = connection.execute(sql, _adapt(params))
    try:
        names = [column[0] for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        cursor.close()
