"""Storage fixtures for pricing tests: the gateway's, one fresh SQLite file or PostgreSQL schema per test.

Tests may use the gateway's storage layer to drive the ledger; `pricing` itself never imports it.
"""

from __future__ import annotations

from tests.gateway.conftest import database, database_url, postgres_server, postgres_url

__all__ = ["database", "database_url", "postgres_server", "postgres_url"]
