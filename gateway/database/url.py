"""`open_database(url)`: the URL's scheme picks the dialect.

sqlite:///relative/path.sqlite3     relative to the working directory
sqlite:////absolute/path.sqlite3
sqlite:///:memory:                  gone when closed; for tests and demos
postgresql://user:password@host:port/dbname?options   (also postgres://; handed to libpq as is)
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from engines.loop_lag import LoopLag
from gateway.database.base import Database
from gateway.database.sqlite import SQLiteDatabase

__all__ = ["open_database", "redact_url"]

_SQLITE = "sqlite:///"
_POSTGRES = ("postgresql://", "postgres://")


async def open_database(
    url: str,
    *,
    pool_size: int = 4,
    start_timeout_s: float = 10.0,
    connect_timeout_s: float = 1.0,
    statement_timeout_s: float = 30.0,
    lag: LoopLag | None = None,
) -> Database:
    """Open the database the URL names. PostgreSQL gets a pool of at most `pool_size` connections and
    fails with DatabaseUnavailable when none connects within `start_timeout_s`; later, each connect is
    bounded by `connect_timeout_s` and each statement or transaction by `statement_timeout_s` (see
    `gateway.database.pool`; with the worker's `lag`, of its loop's free time). SQLite waits up to
    `start_timeout_s` for another writer's lock."""
    if url.startswith(_SQLITE):
        return await SQLiteDatabase.open(_sqlite_path(url), busy_timeout_s=start_timeout_s)
    if url.startswith(_POSTGRES):
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        # imported here: psycopg costs ~20 MB of memory that SQLite deployments need not carry
        from gateway.database.postgres import PostgresDatabase

        return await PostgresDatabase.open(
            url,
            display=redact_url(url),
            max_size=pool_size,
            timeout_s=start_timeout_s,
            connect_timeout_s=connect_timeout_s,
            statement_timeout_s=statement_timeout_s,
            lag=lag,
        )
    scheme = url.split(":", 1)[0] if ":" in url else ""
    raise ValueError(
        f"unsupported database URL scheme {scheme!r} in {redact_url(url)!r}: use sqlite:///path,"
        " sqlite:///:memory: or postgresql://user@host:port/dbname"
    )


def _sqlite_path(url: str) -> str:
    path = url.removeprefix(_SQLITE)
    if not path or "?" in path or "#" in path:
        raise ValueError(
            f"invalid SQLite URL {url!r}: expected sqlite:///relative/path, sqlite:////absolute/path"
            " or sqlite:///:memory:, without query parameters"
        )
    return path


def redact_url(url: str) -> str:
    """The URL without its password, fit for logs and error messages."""
    try:
        parts = urlsplit(url)
        if "password" in parts.query.lower():  # libpq also takes ?password=...
            parts = parts._replace(query="***")
        if parts.password is not None:
            port = f":{parts.port}" if parts.port is not None else ""
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{parts.hostname or ''}{port}")
        return urlunsplit(parts)
    except ValueError:  # unparsable (a bad port): show nothing that might be a secret
        return url.split("://", 1)[0] + "://***"
