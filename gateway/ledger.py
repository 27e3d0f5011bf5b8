"""The money path's durable end in a gateway process: every request's row goes to a local journal before its
response completes, and a background writer drains the journal into the ledger (see pricing/journal*.py)."""

from __future__ import annotations

from pathlib import Path

from gateway.database import Database, Migration
from pricing import LEDGER_MIGRATIONS, Journal, Ledger, LedgerRow, LedgerWriter

__all__ = ["Bookkeeper", "ledger_migrations"]


def ledger_migrations() -> list[Migration]:
    """pricing's ledger schema as the database layer's migrations."""
    return [Migration(m.version, m.name, sqlite=m.sqlite, postgresql=m.postgresql) for m in LEDGER_MIGRATIONS]


class Bookkeeper:
    """Journal, writer and ledger of one process: `record` is the only call on the request path."""

    def __init__(self, ledger: Ledger, journal: Journal, writer: LedgerWriter) -> None:
        self.ledger = ledger
        self._journal = journal
        self._writer = writer

    @classmethod
    async def open(cls, database: Database, journal_root: Path, *, fsync: bool = True) -> Bookkeeper:
        await database.migrate(
            "ledger",
            [
                Migration(m.version, m.name, sqlite=m.sqlite, postgresql=m.postgresql)
                for m in LEDGER_MIGRATIONS
            ],
        )
        ledger = Ledger(database)
        journal = Journal.in_root(journal_root, fsync=fsync)
        return cls(ledger, journal, LedgerWriter(journal, ledger))

    def start(self) -> None:
        self._writer.start()  # also adopts the journals of dead processes under the same root

    async def record(self, row: LedgerRow) -> None:
        """Return once the row is durable on local disk (group-committed with concurrent requests)."""
        await self._journal.append(row)

    async def aclose(self) -> None:
        await self._writer.aclose()  # drains what the database takes; the rest waits on disk
        await self._journal.aclose()
