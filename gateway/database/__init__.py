"""Storage shared by the gateway's components: SQLite by default, PostgreSQL by URL.

One small interface (`Database`: statements, rows as dicts, transactions, versioned migrations) with one
implementation per dialect; SQL is written once with `?` placeholders.
"""

from gateway.database._exceptions import DatabaseError, DatabaseUnavailable, IntegrityError, MigrationError
from gateway.database.base import Database, Dialect, Params, Queries, Row, read_timestamp
from gateway.database.migrations import Migration
from gateway.database.url import open_database, redact_url

__all__ = [
    "Database",
    "DatabaseError",
    "DatabaseUnavailable",
    "Dialect",
    "IntegrityError",
    "Migration",
    "MigrationError",
    "Params",
    "Queries",
    "Row",
    "open_database",
    "read_timestamp",
    "redact_url",
]
