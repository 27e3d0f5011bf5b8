"""Versioned migrations: once each, in order, in a transaction, safe with concurrent migrators."""

from __future__ import annotations

import asyncio

import pytest

from gateway.database import Database, DatabaseError, Migration, MigrationError, open_database


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
