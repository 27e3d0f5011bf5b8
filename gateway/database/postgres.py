"""PostgreSQL through psycopg 3 (async) and a small connection pool.

Connections are in autocommit mode: a statement run on the database is its own transaction, and
`transaction()` opens an explicit one on a connection it keeps until the block ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.database._exceptions import DatabaseError, DatabaseUnavailable, IntegrityError
from gateway.database.base import Database, Dialect, Params, Queries, Row

__all__ = ["PostgresDatabase"]

_Connection = psycopg.AsyncConnection[DictRow]
# "tiergate" in ASCII: one lock for every migrator of this database, whatever its component
_MIGRATION_LOCK = 0x7469_6572_6761_7465


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"

    def __init__(self, pool: AsyncConnectionPool[_Connection], display: str) -> None:
        self._pool = pool
        self.display = display  # the URL without its password, for messages

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.display!r})"

    @classmethod
    async def open(
        cls, conninfo: str, *, display: str, min_size: int = 1, max_size: int = 4, timeout_s: float = 10.0
    ) -> PostgresDatabase:
        pool: AsyncConnectionPool[_Connection] = AsyncConnectionPool(
            conninfo,
            connection_class=_Connection,
            kwargs={"autocommit": True, "row_factory": dict_row},
            # a connection broken by a server restart or failover is replaced, not handed out
            check=AsyncConnectionPool.check_connection,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_s,
            open=False,
            name="tiergate",
        )
        try:
            await pool.open(wait=True, timeout=timeout_s)
        except PoolTimeout as exc:
            await pool.close()
            raise DatabaseUnavailable(f"cannot connect to {display} within {timeout_s:g}s") from exc
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
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        with _translated():
            async with self._pool.connection() as connection, connection.transaction():
                handle = _Transaction(connection)
                try:
                    yield handle
                finally:
                    handle.open = False

    async def aclose(self) -> None:
        await self._pool.close()

    async def _serialize_migrations(self, tx: Queries) -> None:
        # released when the transaction ends, however it ends
        await tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))


class _Transaction(Queries):
    def __init__(self, connection: _Connection) -> None:
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


async def _execute(connection: _Connection, sql: str, params: Params) -> int:
    cursor = await connection.execute(_placeholders(sql), _checked(params))
    return cursor.rowcount


async def _fetch_all(connection: _Connection, sql: str, params: Params) -> list[Row]:
    cursor = await connection.execute(_placeholders(sql), _checked(params))
    return await cursor.fetchall()


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except psycopg.IntegrityError as exc:
        raise IntegrityError(_describe(exc)) from exc
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise DatabaseUnavailable(f"postgresql: {_describe(exc)}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"postgresql: {_describe(exc)}") from exc


def _describe(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
