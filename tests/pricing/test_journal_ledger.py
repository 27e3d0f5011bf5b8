"""Journal to ledger on real databases: an outage keeps rows on disk; recovery stores each exactly once."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.database import Database, DatabaseUnavailable, Migration
from pricing import LedgerRow
from pricing.journal import Journal
from pricing.journal_drain import LedgerWriter
from pricing.ledger import LEDGER_MIGRATIONS, Ledger
from tests.pricing.factories import JAN, make_book, make_row

BOOK = make_book()
DAY = (JAN - timedelta(days=1), JAN + timedelta(days=1))


@pytest.fixture
async def ledger(database: Database) -> Ledger:
    await database.migrate(
        "ledger", [Migration(m.version, m.name, m.sqlite, m.postgresql) for m in LEDGER_MIGRATIONS]
    )
    return Ledger(database)


class FlakyLedger:
    """The real ledger behind a switch: "down" fails before storing, "ack_lost" fails after storing (the
    commit happened, the answer never came back)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.mode = "up"
        self.calls = 0

    async def add(self, rows: Sequence[LedgerRow]) -> int:
        self.calls += 1
        if self.mode == "down":
            raise DatabaseUnavailable("connection refused")
        added = await self.ledger.add(rows)
        if self.mode == "ack_lost":
            raise DatabaseUnavailable("server closed the connection unexpectedly")
        return added


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never happened")


async def stored(database: Database) -> int:
    found = await database.fetch_one("SELECT COUNT(*) AS n FROM ledger")
    assert found is not None
    return int(found["n"])


async def test_an_outage_keeps_rows_on_disk_and_recovery_stores_each_exactly_once(
    ledger: Ledger, database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "j")
    flaky = FlakyLedger(ledger)
    flaky.mode = "down"
    writer = LedgerWriter(journal, flaky, batch=64, interval_s=0.01, retry_s=0.005, max_retry_s=0.02)
    rows = [
        make_row(BOOK, request_id=f"o{i:04d}", prompt_tokens=1000 + i, completion_tokens=i)
        for i in range(300)
    ]
    with caplog.at_level(logging.DEBUG, logger="tiergate.ledger"):
        writer.start()
        await asyncio.gather(*(journal.append(r) for r in rows[:200]))
        await until(lambda: flaky.calls >= 5)
        assert await ledger.total(None, *DAY) == 0
        flaky.mode = "ack_lost"  # the database is back but drops its answers: the writer retries
        await until(lambda: flaky.calls >= 10)
        flaky.mode = "up"
        await asyncio.gather(*(journal.append(r) for r in rows[200:]))
        for _ in range(500):
            if await stored(database) == len(rows):
                break
            await asyncio.sleep(0.01)
        await writer.aclose()
    assert await ledger.total(None, *DAY) == sum(r.charge.total for r in rows)
    assert [r async for r in ledger.rows(None, *DAY)] == rows
    # one batch was stored by a call whose answer was lost: the retries found it there and added nothing
    assert writer.stats.drained == len(rows) and writer.stats.added == len(rows) - 64
    assert writer.stats.failures >= 9
    # logged once per outage, not once per row or per retry
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelno for r in loud] == [logging.ERROR, logging.WARNING]
    await journal.aclose()
    assert not journal.directory.exists()


async def test_shutdown_during_an_outage_leaves_rows_for_the_next_process(
    ledger: Ledger, tmp_path: Path
) -> None:
    root = tmp_path / "journals"  # the SQLite database lives in tmp_path too
    journal = Journal(root / "first")
    flaky = FlakyLedger(ledger)
    flaky.mode = "down"
    writer = LedgerWriter(journal, flaky, interval_s=0.01, retry_s=0.01, close_timeout_s=0.2)
    writer.start()
    rows = [make_row(BOOK, request_id=f"s{i:02d}") for i in range(20)]
    await asyncio.gather(*(journal.append(r) for r in rows))
    await asyncio.wait_for(writer.aclose(), 2)
    await journal.aclose()
    assert journal.directory.exists()

    successor = Journal(root / "second")  # the database is back when the next process starts
    again = LedgerWriter(successor, ledger)
    assert await again.adopt_orphans() == 1
    assert [r async for r in ledger.rows(None, *DAY)] == rows
    await again.aclose()
    await successor.aclose()
    assert await asyncio.to_thread(os.listdir, root) == []
