"""The money path's durable end in a gateway process: every request's row goes to a local journal before its
response completes, and a background writer drains the journal into the ledger (see pricing/journal*.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from gateway.budgets import Budget, Window
from gateway.database import Database, Migration
from pricing import LEDGER_MIGRATIONS, Journal, Ledger, LedgerRow, LedgerWriter
from pricing.journal import JournalStats
from pricing.journal_drain import WriterStats

__all__ = ["Bookkeeper", "ledger_migrations", "ledger_spent"]

log = logging.getLogger("tiergate.ledger")

# While the database is down the writer tries again this often: a try costs nothing then (the pool fails it
# at once), and the journal reaches the ledger within about this of the database's return, not the up to
# 30 s of the writer's own exponential backoff.
_DRAIN_RETRY_S = 1.0


def ledger_migrations() -> list[Migration]:
    """pricing's ledger schema as the database layer's migrations."""
    return [Migration(m.version, m.name, sqlite=m.sqlite, postgresql=m.postgresql) for m in LEDGER_MIGRATIONS]


async def ledger_spent(ledger: Ledger, budget: Budget, window: Window, ended_before: datetime | None) -> int:
    """The ledger's rows of a budget's subject in a window, summed."""
    subject = {"tenant": budget.subject} if budget.scope == "tenant" else {"key_id": budget.subject}
    return await ledger.spent(window.start, window.end, ended_before=ended_before, **subject)


class Bookkeeper:
    """Journal, writer and ledger of one process: `record` is the only call on the request path."""

    def __init__(self, ledger: Ledger, journal: Journal, writer: LedgerWriter) -> None:
        self.ledger = ledger
        self._journal = journal
        self._writer = writer

    @classmethod
    async def open(
        cls,
        database: Database,
        journal_root: Path,
        *,
        fsync: bool = True,
        alone: Callable[[], bool] | None = None,
    ) -> Bookkeeper:
        """`alone`: True while the recording request is the only one the worker holds (its row is then
        written on the loop when the disk is quick: `pricing.journal`)."""
        await database.migrate(
            "ledger",
            [
                Migration(m.version, m.name, sqlite=m.sqlite, postgresql=m.postgresql)
                for m in LEDGER_MIGRATIONS
            ],
        )
        ledger = Ledger(database)
        journal = Journal.in_root(journal_root, fsync=fsync, alone=alone)
        return cls(ledger, journal, LedgerWriter(journal, ledger, max_retry_s=_DRAIN_RETRY_S))

    def start(self) -> None:
        self._writer.start()  # also adopts the journals of dead processes under the same root

    async def catch_up(self, timeout_s: float) -> None:
        """Drain the journals of dead processes into the ledger before serving, so that budgets read a
        complete past from it; a database that does not answer within `timeout_s` is left to the writer."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._writer.adopt_orphans()
        except Exception as exc:
            log.warning(
                "the journals of earlier processes are not all in the ledger yet (%r): budgets do not see"
                " that spending until they are",
                exc,
            )

    async def spent(self, budget: Budget, window: Window, ended_before: datetime | None) -> int:
        """What the ledger holds of a budget's subject in a window (a `gateway.budgets.LedgerSpend`)."""
        return await ledger_spent(self.ledger, budget, window, ended_before)

    @property
    def journal_stats(self) -> JournalStats:
        return self._journal.stats

    @property
    def writer_stats(self) -> WriterStats:
        return self._writer.stats

    async def record(self, row: LedgerRow, *, sent: bool = False) -> None:
        """Return once the row is durable on local disk (group-committed with concurrent requests).
        `sent`: the request has settlements ready to leave, which go before a sync on the loop."""
        await self._journal.append(row, sent=sent)

    async def aclose(self) -> None:
        await self._writer.aclose()  # drains what the database takes; the rest waits on disk
        await self._journal.aclose()
