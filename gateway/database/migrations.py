"""Versioned schema migrations, one series per component (keys, ledger, ...).

Each migration runs in its own transaction together with the row that records it, so it is applied
once or not at all. Migrators serialize on a lock held for that transaction (PostgreSQL: an advisory
lock; SQLite: `BEGIN IMMEDIATE`), then re-read what is applied: two processes starting at once apply
each migration once between them. Neither the wait for that lock nor the migration is held to the bounds
of ordinary statements (`Database._migration_transaction`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.database._exceptions import MigrationError

if TYPE_CHECKING:  # base imports this module: Database only for annotations here
    from gateway.database.base import Database, Dialect

__all__ = ["Migration", "apply_migrations"]

log = logging.getLogger("tiergate.database")

_CREATE_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        component TEXT NOT NULL,
        version INTEGER NOT NULL,
        name TEXT NOT NULL,
        applied_at {timestamp} NOT NULL,
        PRIMARY KEY (component, version)
    )"""
_TIMESTAMP: dict[Dialect, str] = {"sqlite": "TEXT", "postgresql": "TIMESTAMPTZ"}


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of a component's schema: statements per dialect, run in order in one transaction.

    Statements are separate strings because SQLite runs one statement per call (its multi-statement
    `executescript` would commit the transaction under us).
    """

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"migration version must be a positive integer, not {self.version!r}")
        if not self.name:
            raise ValueError(f"migration {self.version} needs a name")
        for dialect in ("sqlite", "postgresql"):
            statements = getattr(self, dialect)
            if isinstance(statements, str) or not statements:
                raise ValueError(f"migration {self.version}: {dialect} needs a tuple of statements")

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgresql


async def apply_migrations(db: Database, component: str, migrations: Sequence[Migration]) -> list[int]:
    if not component:
        raise ValueError("a migration component needs a name")
    versions = [migration.version for migration in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"{component} migrations must have unique, increasing versions: {versions}")
    applied_now: list[int] = []
    while True:
        async with db._migration_transaction() as tx:  # the hook exists for this caller
            await tx.execute(_CREATE_TABLE.format(timestamp=_TIMESTAMP[db.dialect]))
            rows = await tx.fetch_all(
                "SELECT version FROM schema_migrations WHERE component = ?", (component,)
            )
            applied = {int(row["version"]) for row in rows}
            pending = [migration for migration in migrations if migration.version not in applied]
            if not pending:
                _warn_unknown(component, applied - set(versions))
                return applied_now
            step = pending[0]
            if applied and step.version < max(applied):
                raise MigrationError(
                    f"{component} migration {step.version} ({step.name}) is pending but version"
                    f" {max(applied)} is already applied: migrations must only be appended"
                )
            for statement in step.statements(db.dialect):
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES (?, ?, ?, ?)",
                (component, step.version, step.name, datetime.now(UTC)),
            )
        # logged once committed: a rolled-back migration was not applied
        log.info("applied %s migration %d: %s", component, step.version, step.name)
        applied_now.append(step.version)


def _warn_unknown(component: str, unknown: set[int]) -> None:
    # a newer release migrated this database; additive migrations keep older replicas working during
    # a rolling deploy, so this is worth a warning, not a refusal to start
    if unknown:
        log.warning("%s migrations %s are applied but unknown to this version", component, sorted(unknown))
