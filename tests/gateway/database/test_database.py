"""The storage layer on real SQLite files and a real PostgreSQL schema."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.database import (
    Database,
    DatabaseError,
    DatabaseUnavailable,
    IntegrityError,
    Queries,
    open_database,
    read_timestamp,
    redact_url,
)

TABLE = "CREATE TABLE things (label TEXT NOT NULL UNIQUE, at {timestamp})"


async def make_table(db: Database) -> None:
    await db.execute(TABLE.format(timestamp="TIMESTAMPTZ" if db.dialect == "postgresql" else "TEXT"))


def sqlite_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.sqlite3"))


# -- URLs -------------------------------------------------------------------------------------------
async def test_sqlite_urls_relative_absolute_and_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url, file in [
        ("sqlite:///relative.sqlite3", tmp_path / "relative.sqlite3"),
        (f"sqlite:///{tmp_path / 'absolute.sqlite3'}", tmp_path / "absolute.sqlite3"),
        ("sqlite:///:memory:", None),
    ]:
        db = await open_database(url)
        try:
            assert db.dialect == "sqlite"
            await make_table(db)
        finally:
            await db.aclose()
        if file is not None:
            assert file.is_file()
    assert sqlite_files(tmp_path) == [
        "absolute.sqlite3",
        "relative.sqlite3",
    ]


async def test_file_databases_use_wal(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 'wal.sqlite3'}")
    try:
        assert await db.fetch_one("PRAGMA journal_mode") == {"journal_mode": "wal"}
        assert await db.fetch_one("PRAGMA foreign_keys") == {"foreign_keys": 1}
    finally:
        await db.aclose()


async def test_both_postgres_schemes_open(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        db = await open_database(url)
        try:
            assert db.dialect == "postgresql"
            assert await db.fetch_one("SELECT 1 + ? AS two", (1,)) == {"two": 2}
        finally:
            await db.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "tiergate.sqlite3",
        "mysql://root@localhost/db",
        "postgresql+psycopg://u@h/db",
        "sqlite://relative.sqlite3",
        "sqlite:///",
        "sqlite:///db.sqlite3?mode=ro",
    ],
)
async def test_unsupported_urls_are_refused_clearly(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        await open_database(url)


def test_redact_url_hides_passwords() -> None:
    assert redact_url("postgresql://u:hunter2@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert "hunter2" not in redact_url("postgresql://u@db/x?password=hunter2")
    assert redact_url("postgresql://u@db/x") == "postgresql://u@db/x"


async def test_unreachable_postgres_is_unavailable_and_hides_the_password() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    with pytest.raises(DatabaseUnavailable) as caught:
        await open_database(f"postgresql://u:hunter2@127.0.0.1:{port}/x", start_timeout_s=0.5)
    assert "hunter2" not in str(caught.value)
    assert caught.value.retryable


# -- statements -------------------------------------------------------------------------------------
async def test_statements_rows_and_placeholders(database: Database) -> None:
    await make_table(database)
    assert await database.execute("INSERT INTO things (label) VALUES (?)", ("a",)) == 1
    await database.execute_many("INSERT INTO things (label) VALUES (?)", [("b",), ("c",)])
    # a literal % must survive PostgreSQL's %s placeholders
    rows = await database.fetch_all(
        "SELECT label, '100%' AS pct FROM things WHERE label <> ? ORDER BY label", ("b",)
    )
    assert rows == [{"label": "a", "pct": "100%"}, {"label": "c", "pct": "100%"}]
    assert await database.execute("UPDATE things SET label = label || ?", ("!",)) == 3
    assert await database.fetch_one("SELECT label FROM things WHERE label = ?", ("nope",)) is None


async def test_unique_violation_is_an_integrity_error(database: Database) -> None:
    await make_table(database)
    await database.execute("INSERT INTO things (label) VALUES (?)", ("a",))
    with pytest.raises(IntegrityError):
        await database.execute("INSERT INTO things (label) VALUES (?)", ("a",))
    with pytest.raises(DatabaseError) as caught:
        await database.execute("SELECT * FROM no_such_table")
    assert not caught.value.retryable


async def test_execute_many_is_atomic(database: Database) -> None:
    await make_table(database)
    with pytest.raises(IntegrityError):
        await database.execute_many("INSERT INTO things (label) VALUES (?)", [("x",), ("y",), ("x",)])
    assert await database.fetch_all("SELECT label FROM things") == []


async def test_transactions_commit_or_roll_back(database: Database) -> None:
    await make_table(database)
    async with database.transaction() as tx:
        await tx.execute("INSERT INTO things (label) VALUES (?)", ("kept",))
        assert await tx.fetch_one("SELECT label FROM things") == {"label": "kept"}
    handles: list[Queries] = []

    async def fails_halfway() -> None:
        async with database.transaction() as tx:
            handles.append(tx)
            await tx.execute("INSERT INTO things (label) VALUES (?)", ("lost",))
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fails_halfway()
    assert await database.fetch_all("SELECT label FROM things") == [{"label": "kept"}]
    with pytest.raises(RuntimeError, match="ended"):
        await handles[0].execute("SELECT 1")


async def test_timestamps_round_trip_as_aware_utc(database: Database) -> None:
    await make_table(database)
    at = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    await database.execute("INSERT INTO things (label, at) VALUES (?, ?)", ("t", at))
    row = await database.fetch_one("SELECT at FROM things WHERE at > ?", (at - timedelta(microseconds=1),))
    assert row is not None
    stored = read_timestamp(row["at"])
    assert stored == at
    assert stored.tzinfo is UTC
    with pytest.raises(ValueError, match="time zone"):
        await database.execute(
            "INSERT INTO things (label, at) VALUES (?, ?)", ("naive", datetime(2030, 1, 1))
        )


# -- SQLite's single connection ---------------------------------------------------------------------
async def test_sqlite_refuses_the_database_inside_its_own_transaction(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        async with db.transaction():
            with pytest.raises(RuntimeError, match="handle"):  # instead of waiting for itself forever
                await db.execute("SELECT 1")
    finally:
        await db.aclose()


async def test_sqlite_is_usable_after_a_transaction_is_cancelled(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        await make_table(db)

        async def write(label: str) -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO things (label) VALUES (?)", (label,))
                await asyncio.sleep(60)

        # cancelled at every step: waiting for the lock, during BEGIN, mid-statement, in the block
        for steps in range(8):
            task = asyncio.create_task(write(f"cancelled {steps}"))
            for _ in range(steps):
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO things (label) VALUES (?)", ("next",))
        assert await db.fetch_all("SELECT label FROM things") == [{"label": "next"}]
    finally:
        await db.aclose()


async def test_two_sqlite_connections_to_one_file_serialize_writers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    first, second = await open_database(url), await open_database(url)
    try:
        await make_table(first)

        async def write(db: Database, label: str) -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO things (label) VALUES (?)", (label,))
                await asyncio.sleep(0.05)  # hold the write lock while the other one asks for it

        await asyncio.gather(write(first, "one"), write(second, "two"))
        rows = await second.fetch_all("SELECT label FROM things ORDER BY label")
        assert rows == [{"label": "one"}, {"label": "two"}]
    finally:
        await first.aclose()
        await second.aclose()
