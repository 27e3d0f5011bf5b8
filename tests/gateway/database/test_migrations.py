"""Versioned migrations: once each, in order, in a transaction, safe with concurrent migrators."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

import psycopg
import pytest

from gateway.database import (
    Database,
    DatabaseError,
    DatabaseUnavailable,
    Migration,
    MigrationError,
    open_database,
)
from gateway.database.postgres import _MIGRATION_LOCK


def same(version: int, name: str, *statements: str) -> Migration:
    return Migration(version, name, sqlite=statements, postgresql=statements)


WIDGETS = (
    same(1, "widgets", "CREATE TABLE widgets (id INTEGER PRIMARY KEY, label TEXT NOT NULL)"),
    # not idempotent: run twice, it would leave two rows
    same(2, "first widget", "INSERT INTO widgets (id, label) VALUES (1, 'first')"),
    same(3, "colour", "ALTER TABLE widgets ADD COLUMN colour TEXT"),
)


async def applied(db: Database, component: str = "widgets") -> list[tuple[int, str]]:
    rows = await db.fetch_all(
        "SELECT version, name FROM schema_migrations WHERE component = ? ORDER BY version", (component,)
    )
    return [(row["version"], row["name"]) for row in rows]


async def test_each_migration_is_applied_once_in_order(database: Database) -> None:
    assert await database.migrate("widgets", WIDGETS[:2]) == [1, 2]
    assert await database.migrate("widgets", WIDGETS) == [3]
    assert await database.migrate("widgets", WIDGETS) == []
    assert await applied(database) == [(1, "widgets"), (2, "first widget"), (3, "colour")]
    assert await database.fetch_all("SELECT id, label, colour FROM widgets") == [
        {"id": 1, "label": "first", "colour": None}
    ]
    row = await database.fetch_one("SELECT applied_at FROM schema_migrations WHERE version = 1")
    assert row is not None
    assert row["applied_at"] is not None


async def test_components_have_their_own_versions(database: Database) -> None:
    await database.migrate("widgets", WIDGETS[:1])
    gadgets = (same(1, "gadgets", "CREATE TABLE gadgets (id INTEGER PRIMARY KEY)"),)
    assert await database.migrate("gadgets", gadgets) == [1]
    assert await applied(database, "gadgets") == [(1, "gadgets")]
    assert await applied(database) == [(1, "widgets")]


async def test_a_failing_migration_leaves_nothing_behind(database: Database) -> None:
    broken = (
        WIDGETS[0],
        same(2, "broken", "CREATE TABLE half_done (id INTEGER)", "INSERT INTO no_such_table VALUES (1)"),
    )
    with pytest.raises(DatabaseError):
        await database.migrate("widgets", broken)
    assert await applied(database) == [(1, "widgets")]  # the first one committed on its own
    with pytest.raises(DatabaseError):  # the second one's table was rolled back with it
        await database.fetch_all("SELECT * FROM half_done")
    assert await database.migrate("widgets", WIDGETS) == [2, 3]


async def test_dialects_get_their_own_statements(database: Database) -> None:
    migration = Migration(
        1,
        "dialect",
        sqlite=("CREATE TABLE which (name TEXT)", "INSERT INTO which VALUES ('sqlite')"),
        postgresql=("CREATE TABLE which (name TEXT)", "INSERT INTO which VALUES ('postgresql')"),
    )
    await database.migrate("which", [migration])
    assert await database.fetch_all("SELECT name FROM which") == [{"name": database.dialect}]


async def test_concurrent_migrators_apply_each_migration_once(database_url: str) -> None:
    migrators = [await open_database(database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(db.migrate("widgets", WIDGETS) for db in migrators))
        assert sorted(version for result in results for version in result) == [1, 2, 3]
        assert await applied(migrators[0]) == [(1, "widgets"), (2, "first widget"), (3, "colour")]
        assert await migrators[0].fetch_all("SELECT label FROM widgets") == [{"label": "first"}]
    finally:
        await asyncio.gather(*(db.aclose() for db in migrators))


async def test_a_migration_slipped_below_applied_ones_is_refused(database: Database) -> None:
    await database.migrate("widgets", [WIDGETS[0], WIDGETS[2]])
    with pytest.raises(MigrationError, match="appended"):
        await database.migrate("widgets", WIDGETS)


async def test_migrations_unknown_to_this_version_are_tolerated(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await database.migrate("widgets", WIDGETS)
    assert await database.migrate("widgets", WIDGETS[:2]) == []  # an older replica in a rolling deploy
    assert "[3]" in caplog.text


@pytest.mark.parametrize(
    "migrations",
    [
        [WIDGETS[1], WIDGETS[0]],
        [WIDGETS[0], WIDGETS[0]],
    ],
)
async def test_migration_lists_must_increase(database: Database, migrations: list[Migration]) -> None:
    with pytest.raises(ValueError, match="increasing"):
        await database.migrate("widgets", migrations)


def test_a_migration_is_checked_when_made() -> None:
    with pytest.raises(ValueError, match="positive"):
        same(0, "zero", "SELECT 1")
    with pytest.raises(ValueError, match="name"):
        same(1, "", "SELECT 1")
    with pytest.raises(ValueError, match="tuple"):
        Migration(1, "a string", sqlite="SELECT 1", postgresql=("SELECT 1",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tuple"):
        Migration(1, "empty", sqlite=(), postgresql=("SELECT 1",))


async def test_a_migration_may_outlast_the_statement_timeout(postgres_url: str) -> None:
    # an index over a large ledger takes minutes: were it bounded like a request's statement, it would be
    # rolled back at every start and the gateway would never start again
    db = await open_database(postgres_url, statement_timeout_s=0.3)
    try:
        assert await db.migrate("slow", [same(1, "slow", "SELECT pg_sleep(1)")]) == [1]
        with pytest.raises(DatabaseUnavailable):  # anything else is bounded as before
            await db.execute("SELECT pg_sleep(1)")
    finally:
        await db.aclose()


async def test_a_migrator_waits_for_another_however_long_it_takes(database_url: str) -> None:
    # bounds shorter than the other migrator's work: the statement timeout (PostgreSQL), the wait for a
    # lock (SQLite)
    db = await open_database(database_url, start_timeout_s=0.2, statement_timeout_s=0.2)
    release = _hold_the_migration_lock(database_url)  # as another process's migration does
    try:
        migrating = asyncio.create_task(db.migrate("widgets", WIDGETS))
        await asyncio.wait([migrating], timeout=1.0)
        if migrating.done():  # it must wait: neither give up nor migrate under the other's lock
            pytest.fail(f"the migrator did not wait: {migrating.exception()!r}")
        release()
        assert await migrating == [1, 2, 3]
        if db.dialect == "sqlite":  # other writers wait for a lock as briefly as before
            assert await db.fetch_one("PRAGMA busy_timeout") == {"timeout": 200}
    finally:
        release()
        await db.aclose()


def _hold_the_migration_lock(url: str) -> Callable[[], None]:
    """Take the lock a migrating process holds, on a connection of its own; the callable gives it back."""
    if url.startswith("sqlite:///"):
        lite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        lite.execute("BEGIN IMMEDIATE")  # the database's write lock
        return lite.close  # closing gives the lock back; again does nothing
    pg = psycopg.connect(url, autocommit=True)
    pg.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    return pg.close
