"""Stored responses: what `GET /v1/responses/{id}`, its input items and `previous_response_id` read. Tenant
data: each row belongs to the tenant whose key created it (another tenant's id reads as unknown), is gone
after DELETE or once its retention ends, and is never logged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.database import Database, Migration

__all__ = ["COMPONENT", "MIGRATIONS", "ResponseStore", "StoredResponse"]

COMPONENT = "responses"
_PURGE_EVERY_S = 60.0


def _table(integer: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE stored_responses (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL,
            previous_id TEXT,
            created_at {integer} NOT NULL,
            expires_at {integer} NOT NULL,
            response TEXT NOT NULL,
            input_items TEXT NOT NULL,
            turn TEXT NOT NULL
        )""",
        "CREATE INDEX stored_responses_expiry ON stored_responses (expires_at)",
    )


# A response keeps its own turn only (its input and its answer, as chat messages); a conversation is the
# chain of turns back through previous_id, read in one recursive query. No row holds a copy of another's
# text: a DELETE takes a turn out of every conversation it was in, and a long chain costs linear space.
MIGRATIONS = (Migration(1, "stored responses", sqlite=_table("INTEGER"), postgresql=_table("BIGINT")),)

_CHAIN = """
    WITH RECURSIVE chain (previous_id, turn, depth) AS (
        SELECT previous_id, turn, 0 FROM stored_responses WHERE id = ? AND tenant_id = ? AND expires_at > ?
        UNION ALL
        SELECT s.previous_id, s.turn, chain.depth + 1
        FROM stored_responses s JOIN chain ON s.id = chain.previous_id
        WHERE s.tenant_id = ? AND s.expires_at > ? AND chain.depth < ?
    )
    SELECT turn FROM chain ORDER BY depth DESC"""
_MAX_CHAIN = 10_000  # a bound on the recursion, far beyond any real conversation


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]  # the response object, as it was answered
    input_items: list[dict[str, Any]]  # this request's input items, each with its id


_INSERT = (
    "INSERT INTO stored_responses (id, tenant_id, previous_id, created_at, expires_at, response, input_items,"
    " turn) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class ResponseStore:
    """Stored responses in the gateway's database, opened (and migrated) on first use: a gateway whose
    clients never use the Responses API opens nothing for it.

    Saves are group-committed: the rows of every save waiting while one transaction runs go in the next,
    together, and each save returns once its row is committed. One commit (one fsync for SQLite) per
    batch, not per response: under load, storing costs little more than not storing (docs/benchmarks.md).
    """

    def __init__(
        self,
        database: Database | Callable[[], Awaitable[Database]],
        *,
        retention_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._given = database if isinstance(database, Database) else None
        self._opener = None if isinstance(database, Database) else database
        self._database: Database | None = None
        self._lock = asyncio.Lock()
        self._retention_s = retention_s
        self._clock = clock
        self._purged_at = 0.0
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def _db(self) -> Database:
        if self._database is not None:
            return self._database
        async with self._lock:
            if self._database is None:
                if self._given is not None:
                    database = self._given
                else:
                    assert self._opener is not None
                    database = await self._opener()
                await database.migrate(COMPONENT, MIGRATIONS)
                self._database = database
        return self._database

    async def save(
        self,
        tenant: str,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        turn: list[dict[str, Any]],
    ) -> None:
        """Store a response; returns once it is committed (a client may read it as soon as it has it)."""
        db = await self._db()
        now = self._clock()
        row = (
            response["id"],
            tenant,
            response.get("previous_response_id"),
            int(now),
            int(now + self._retention_s),
            orjson.dumps(response).decode(),
            orjson.dumps(input_items).decode(),
            orjson.dumps(turn).decode(),
        )
        committed = asyncio.get_running_loop().create_future()
        self._pending.append((row, committed))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write(db))
        await asyncio.shield(committed)  # a client that leaves does not take its row with it

    async def _write(self, db: Database) -> None:
        """Commit what is pending, batch after batch, until nothing is (then end, with no await between the
        last look and the end: a save that comes later starts a new writer). Started by a save, it first
        lets the loop run once: the other responses that end in the same turn join the first batch."""
        await asyncio.sleep(0)  # the saves of this turn of the loop, together
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await db.execute_many(_INSERT, [row for row, _ in batch])  # one transaction, one commit
            except Exception as exc:  # each waiting save fails with it: its client gets an error
                for _, committed in batch:
                    if not committed.done():
                        committed.set_exception(exc)
                continue
            for _, committed in batch:
                if not committed.done():
                    committed.set_result(None)
            now = self._clock()
            if now - self._purged_at >= _PURGE_EVERY_S:
                self._purged_at = now
                with contextlib.suppress(Exception):  # a purge that failed runs again in a minute
                    await db.execute("DELETE FROM stored_responses WHERE expires_at <= ?", (int(now),))

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        """The tenant's stored response (None: unknown, another tenant's, deleted or past retention)."""
        db = await self._db()
        row = await db.fetch_one(
            "SELECT response, input_items FROM stored_responses"
            " WHERE id = ? AND tenant_id = ? AND expires_at > ?",
            (response_id, tenant, int(self._clock())),
        )
        if row is None:
            return None
        return StoredResponse(orjson.loads(row["response"]), orjson.loads(row["input_items"]))

    async def conversation(self, tenant: str, response_id: str) -> list[dict[str, Any]] | None:
        """The chat messages of the conversation up to and including the response (None: no such response
        for the tenant): its turn and those before it, back to the first, or to one deleted or expired."""
        db = await self._db()
        now = int(self._clock())
        rows = await db.fetch_all(_CHAIN, (response_id, tenant, now, tenant, now, _MAX_CHAIN))
        if not rows:
            return None
        return [message for row in rows for message in orjson.loads(row["turn"])]

    async def delete(self, tenant: str, response_id: str) -> bool:
        db = await self._db()
        deleted = await db.execute(
            "DELETE FROM stored_responses WHERE id = ? AND tenant_id = ? AND expires_at > ?",
            (response_id, tenant, int(self._clock())),
        )
        return deleted > 0

    async def aclose(self) -> None:
        """Close the database this store opened itself (not one it was given), once every save is in."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
        if self._database is not None and self._given is None:
            await self._database.aclose()
