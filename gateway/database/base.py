"""The one interface both dialects implement: statements, rows, transactions, migrations.

SQL is written once with `?` placeholders (positional); each dialect adapts it (PostgreSQL gets `%s`).
A literal `?` must therefore travel as a parameter, never inside the SQL text. Where the dialects
really differ (column types in DDL), callers keep one statement per dialect, keyed by `Database.dialect`.

Timestamps go in as timezone-aware `datetime`s and come out through `read_timestamp`: PostgreSQL stores
`timestamptz`; SQLite stores fixed-width ISO-8601 UTC text, which sorts like the instant it names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.database.migrations import Migration, apply_migrations

__all__ = ["Database", "Dialect", "Params", "Queries", "Row", "read_timestamp"]

Dialect = Literal["sqlite", "postgresql"]
Row = dict[str, Any]
Params = Sequence[Any]


class Queries(ABC):
    """What runs statements: the database itself (each call on its own) or an open transaction."""

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""

    @abstractmethod
    async def execute_many(self, sql: str, params: Iterable[Params]) -> None:
        """Run one statement once per parameter tuple, atomically."""

    @abstractmethod
    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None


class Database(Queries):
    """A connection (SQLite) or a small pool of them (PostgreSQL), opened by `open_database`.

    Statements run on the database directly are each their own transaction. Inside `transaction()`
    run them through the handle it yields: the database itself is not part of that transaction.
    """

    dialect: Dialect

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Queries]:
        """Commit when the block ends, roll back when it raises. On SQLite the write lock is taken at
        once (`BEGIN IMMEDIATE`), so two processes never deadlock upgrading a read to a write."""

    @abstractmethod
    async def aclose(self) -> None: ...

    async def migrate(self, component: str, migrations: Sequence[Migration]) -> list[int]:
        """Apply the component's pending migrations, in order; return the versions applied now."""
        return await apply_migrations(self, component, migrations)

    @abstractmethod
    def _migration_transaction(self) -> AbstractAsyncContextManager[Queries]:
        """`transaction()` for one migration step: it waits for other migrators (other processes included)
        and they wait for it, however long that takes. A migration (an index over a large ledger) may outlast
        the bounds of ordinary statements: were it held to them, it would be rolled back at every start."""


def read_timestamp(value: datetime | str) -> datetime:
    """A timestamp column as an aware UTC datetime, whichever dialect stored it."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value.isoformat()} has no time zone")
    return value.astimezone(UTC)
