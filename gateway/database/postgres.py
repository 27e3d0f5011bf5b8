"""PostgreSQL through psycopg 3 (async) and a small connection pool of our own (see pool.py).

Connections are in autocommit mode: a statement run on the database is its own transaction, and
`transaction()` opens an explicit one on a connection it keeps until the block ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any

import psycopg

from engines.loop_lag import LoopLag
from gateway.database._exceptions import DatabaseError, DatabaseUnavailable, IntegrityError
from gateway.database.base import Database, Dialect, Params, Queries, Row
from gateway.database.pool import Connection, ConnectionPool, describe

__all__ = ["PostgresDatabase"]

# "tiergate" in ASCII: one lock for every migrator of this database, whatever its component
_MIGRATION_LOCK = 0x7469_6572_6761_7465


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"

    def __init__(self, pool: ConnectionPool, display: str) -> None:
        self._pool = pool
        self.display = display  # the URL without its password, for messages

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.display!r})"

    @classmethod
    async def open(
        cls,
        conninfo: str,
        *,
        display: str,
        max_size: int = 4,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 1.0,
        statement_timeout_s: float = 30.0,
        lag: LoopLag | None = None,
    ) -> PostgresDatabase:
        """Connect within `timeout_s` (trying again meanwhile); later connects are bounded by
        `connect_timeout_s`, each statement or transaction by `statement_timeout_s` (of the loop's free time,
        with `lag`)."""
        pool = ConnectionPool(
            conninfo,
            display=display,
            max_size=max_size,
            connect_timeout_s=min(connect_timeout_s, timeout_s),
            use_timeout_s=statement_timeout_s,
            lag=lag,
        )
        await pool.open(timeout_s)
        return cls(pool, display)

    # -- Queries ----------------------------------------------------------------------------------
    async def execute(self, sql: str, params: Params = ()) -> int:
        with _translated():
            async with self._pool.connection() as connection:
                return await _execute(connection, sql, params)

    async def execute_many(self, sql: str, params: Iterable[Params]) -> None:
        async with self.transaction() as tx:
            await tx.execute_many(sql, params)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        with _translated():
            async with self._pool.connection() as connection:
                return await _fetch_all(connection, sql, params)

    # -- Database ---------------------------------------------------------------------------------
    def transaction(self) -> AbstractAsyncContextManager[Queries]:
        return self._transaction(bounded=True)

    @asynccontextmanager
    async def _migration_transaction(self) -> AsyncIterator[Queries]:
        async with self._transaction(bounded=False) as tx:
            # released when the transaction ends, however it ends
            await tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            yield tx

    @asynccontextmanager
    async def _transaction(self, *, bounded: bool) -> AsyncIterator[Queries]:
        with _translated():
            async with self._pool.connection(bounded=bounded) as connection, connection.transaction():
                handle = _Transaction(connection)
                try:
                    yield handle
                finally:
                    handle.open = False

    async def aclose(self) -> None:
        await self._pool.aclose()


class _Transaction(Queries):
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.open = True

    async def execute(self, sql: str, params: Params = ()) -> int:
        self._check()
        with _translated():
            return await _execute(self._connection, sql, params)

    async def execute_many(self, sql: str, params: Iterable[Params]) -> None:
        self._check()
        with _translated():
            async with self._connection.cursor() as cursor:
                await cursor.executemany(_placeholders(sql), [_checked(p) for p in params])

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        self._check()
        with _translated():
            return await _fetch_all(self._connection, sql, params)

    def _check(self) -> None:
        if not self.open:
            raise RuntimeError("this transaction has ended")


def _placeholders(sql: str) -> str:
    # psycopg's placeholder is %s, so a literal % must be doubled
    return sql.replace("%", "%%").replace("?", "%s")


def _checked(params: Params) -> tuple[Any, ...]:
    for value in params:
        # PostgreSQL would read a naive datetime in the session's time zone; SQLite refuses it: so do we
        if isinstance(value, datetime) and value.utcoffset() is None:
            raise ValueError(f"timestamp {value.isoformat()} has no time zone")
    return tuple(params)


async def _execute(connection: Connection, sql: str, params: Params) -> int:
    cursor = await connection.execute(_placeholders(sql), _checked(params))
    return cursor.rowcount


async def _fetch_all(connection: Connection, sql: str, params: Params) -> list[Row]:
    cursor = await connection.execute(_placeholders(sql), _checked(params))
    return await cursor.fetchall()


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except psycopg.IntegrityError as exc:
        raise IntegrityError(describe(exc)) from exc
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"postgresql: {describe(exc)}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"postgresql: {describe(exc)}") from exc
