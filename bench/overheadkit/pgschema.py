"""A PostgreSQL schema of a benchmark's own, in a database others may share."""

from __future__ import annotations

import secrets

import psycopg
from psycopg import sql

__all__ = ["PostgresSchema"]


class PostgresSchema:
    """A schema of our own, dropped on exit: the benchmark never touches anything it did not create."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"tg_bench_{secrets.token_hex(6)}"

    def __enter__(self) -> str:
        with psycopg.connect(self.server, autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.name)))
        separator = "&" if "?" in self.server else "?"
        return f"{self.server}{separator}options=-csearch_path%3D{self.name}"

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(self.server, autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self.name)))
