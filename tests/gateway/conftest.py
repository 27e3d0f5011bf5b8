"""Storage fixtures: a database URL per dialect, each test with its own empty database.

PostgreSQL tests run in a schema of their own (`tg_test_<uuid>`, dropped afterwards), reached through
the URL's `options=-csearch_path=...`: they never see or touch anything they did not create. When no
server answers they are skipped, loudly; with TIERGATE_REQUIRE_POSTGRES set (CI) they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from gateway.database import Database, open_database, redact_url
from tests.gateway.database.postgres_server import postgres_template, throwaway_postgres
from tests.gateway.limits.redis_server import redis_prefix, redis_url

__all__ = [
    "database",
    "database_url",
    "postgres_server",
    "postgres_template",
    "postgres_url",
    "redis_prefix",
    "redis_url",
    "throwaway_postgres",
]

POSTGRES_ENV = "TIERGATE_TEST_POSTGRES"  # a server of your own: postgresql://user@host:port/db
REQUIRE_ENV = "TIERGATE_REQUIRE_POSTGRES"
_LOCAL = ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of a reachable PostgreSQL database to make test schemas in."""
    explicit = os.environ.get(POSTGRES_ENV)
    failures = []
    for url in [explicit] if explicit else _LOCAL:
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url
        except psycopg.Error as exc:
            failures.append(f"{redact_url(url)}: {str(exc).strip().splitlines()[0] if str(exc) else exc!r}")
    message = (
        "PostgreSQL IS UNREACHABLE, so every PostgreSQL test is SKIPPED: " + "; ".join(failures) + "."
        f" Start one, or point {POSTGRES_ENV} at one; set {REQUIRE_ENV}=1 to make this a failure."
    )
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose connections work in a fresh schema, dropped after the test."""
    schema = f"tg_test_{uuid.uuid4().hex}"
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        separator = "&" if "?" in postgres_server else "?"
        yield f"{postgres_server}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tiergate.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = await open_database(database_url)
    try:
        yield db
    finally:
        await db.aclose()
