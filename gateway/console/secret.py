"""The console's signing secret: the configured one, or a random one made once and kept in the database, so
every worker of `tiergate serve --workers N` (and every replica on the same database) signs alike."""

from __future__ import annotations

import secrets

from gateway.database import Database, Migration
from gateway.settings import ConsoleSettings

__all__ = ["console_secret"]

_TABLE = "console_secret"
_MIGRATIONS = (
    Migration(
        1,
        "the console's session secret",
        sqlite=(f"CREATE TABLE {_TABLE} (id INTEGER PRIMARY KEY, secret TEXT NOT NULL)",),
        postgresql=(f"CREATE TABLE {_TABLE} (id INTEGER PRIMARY KEY, secret TEXT NOT NULL)",),
    ),
)


async def console_secret(settings: ConsoleSettings, database: Database | None) -> bytes | None:
    """The secret, or None when there is none to be had (no setting, no database): the console is then off."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    if database is None:
        return None
    await database.migrate("console", _MIGRATIONS)
    # the first process to insert wins; every other one reads what it wrote
    await database.execute(
        f"INSERT INTO {_TABLE} (id, secret) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
        (secrets.token_urlsafe(48),),
    )
    row = await database.fetch_one(f"SELECT secret FROM {_TABLE} WHERE id = 1")
    assert row is not None
    return str(row["secret"]).encode()
