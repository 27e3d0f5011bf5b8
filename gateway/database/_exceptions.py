"""Errors raised by the storage layer.

The tree, with whether retrying later may help:

    DatabaseError              base: the statement failed                                      (no)
    ├── DatabaseUnavailable    could not connect, timed out, or the database was busy/locked   (yes)
    ├── IntegrityError         a constraint refused the statement: unique key, foreign key     (no)
    └── MigrationError         the applied migrations do not fit the ones this code carries    (no)

Errors of the drivers below (`sqlite3`, `psycopg`) are translated at the boundary
(`raise IntegrityError(...) from exc`), so callers never import a driver to handle them.
"""

from __future__ import annotations

__all__ = ["DatabaseError", "DatabaseUnavailable", "IntegrityError", "MigrationError"]


class DatabaseError(Exception):
    retryable = False


class DatabaseUnavailable(DatabaseError):
    retryable = True


class IntegrityError(DatabaseError):
    pass


class MigrationError(DatabaseError):
    pass
