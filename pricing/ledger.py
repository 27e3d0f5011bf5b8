"""The ledger: one row per request, exactly once, every amount an integer number of micros.

Rows arrive at least once (the journal replays after a crash, a drain may be retried) and are stored exactly
once: `request_id` is the primary key and `add` inserts with `ON CONFLICT (request_id) DO NOTHING`, so a
replayed or duplicated row changes nothing and is not counted again. The first write of a request id wins,
so the id must be unique per request, made by the gateway (never a client's own x-request-id): a different
row arriving under a stored id is logged as an error and counted (`Ledger.clashes`), not stored.

Periods: a request belongs to the period that contains its `started_at`, the same instant that selects its
price version (`pricing.book`), so one moment decides both what a request costs and on which invoice it is.
Periods are half-open, `start <= started_at < end`.

The ledger speaks SQL through `LedgerSQL`, a protocol that `gateway.database.Database` satisfies as it is:
pricing never imports the gateway. SQL uses `?` placeholders, which the PostgreSQL side rewrites.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from pricing.ledger_rows import check_storable, ledger_row, row_values, same_row
from pricing.ledger_schema import LEDGER_MIGRATIONS, TABLE, LedgerMigration
from pricing.records import LedgerRow

__all__ = [
    "LEDGER_MIGRATIONS",
    "Ledger",
    "LedgerMigration",
    "LedgerQueries",
    "LedgerSQL",
    "LedgerTotal",
    "check_storable",
]

log = logging.getLogger("tiergate.ledger")


class LedgerQueries(Protocol):
    """What runs statements: the database, or a transaction it opened."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None: ...


class LedgerSQL(LedgerQueries, Protocol):
    """The database the ledger needs; `gateway.database.Database` is one."""

    @property
    def dialect(self) -> str: ...  # "sqlite" | "postgresql"

    def transaction(self) -> AbstractAsyncContextManager[LedgerQueries]: ...


# every column with its type in PostgreSQL's json_to_recordset, in table order
_COLUMN_TYPES = (
    ("request_id", "text"), ("tenant", "text"), ("key_id", "text"), ("tier", "text"), ("model", "text"),
    ("served_model", "text"), ("replica", "text"), ("endpoint", "text"), ("prompt_tokens", "bigint"),
    ("cached_tokens", "bigint"), ("completion_tokens", "bigint"), ("reasoning_tokens", "bigint"),
    ("estimated", "boolean"), ("depth_samples", "bigint"), ("depth_extensions", "bigint"),
    ("depth_floor", "bigint"), ("depth_floor_met", "boolean"), ("depth_agreement", "double precision"),
    ("outcome", "text"), ("streamed", "boolean"), ("started_at", "timestamptz"),
    ("first_token_at", "timestamptz"), ("ended_at", "timestamptz"), ("currency", "text"),
    ("price_version", "text"), ("rated_tier", "text"), ("total_micros", "bigint"), ("lines", "text"),
    ("depth_shortfall", "text"),
    ("cascade", "text"),
    ("priority_class", "text"),
)  # fmt: skip
_COLUMNS = tuple(column for column, _ in _COLUMN_TYPES)
_ROW_PLACEHOLDER = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
# SQLite: VALUES lists of up to 500 rows x 31 columns = 15,500 parameters, under its limit of 32,766 (3.32+)
ROWS_PER_STATEMENT = 500
# PostgreSQL: the whole batch as one JSON parameter, unpacked by the server in the order given
_BATCH_COLUMNS = ", ".join(f"{column} {kind}" for column, kind in _COLUMN_TYPES)
_INSERT_JSON = (
    f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS)}"
    f" FROM json_to_recordset(?::json) AS batch({_BATCH_COLUMNS}) ON CONFLICT (request_id) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class LedgerTotal:
    """One group of a period's rows. `tier` is the tier asked for, `rated_tier` the one whose prices applied
    (they differ when a deliberate request missed its depth floor); `total` is in micros of `currency`."""

    tier: str
    rated_tier: str
    model: str
    currency: str
    requests: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total: int


_SUMS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "total")


class Ledger:
    def __init__(self, db: LedgerSQL) -> None:
        if db.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"the ledger does not know the {db.dialect!r} dialect")
        self._db = db
        self.clashes = 0  # rows refused because another request already used their id

    async def add(self, rows: Sequence[LedgerRow]) -> int:
        """Insert the rows whose request id is new; return how many were. Atomic: all of them or none.

        A row whose id is already stored is not stored again. When it is the same row (a replay) that is
        the point; when it differs, two requests share an id and the later one goes unbilled: that is
        logged as an error and counted in `clashes`, never silently dropped."""
        if not rows:
            return 0
        first: dict[str, LedgerRow] = {}
        clashing = []
        for row in rows:
            kept = first.setdefault(row.record.request_id, row)
            if kept is not row and kept != row:
                clashing.append(row.record.request_id)
        # in key order: two concurrent adds on PostgreSQL then take their row locks in the same order
        # and cannot deadlock on overlapping batches
        unique = sorted(first.values(), key=_request_id)
        values = [row_values(row) for row in unique]
        added = await self._insert(values)
        if added < len(unique):
            clashing += await self._clashing(values)
        if clashing:
            self.clashes += len(clashing)
            log.error(
                "%d ledger rows NOT stored: their request ids are already in the ledger for different"
                " requests (the first write wins), e.g. %s",
                len(clashing),
                clashing[:5],
            )
        return added

    async def _insert(self, values: list[dict[str, Any]]) -> int:
        if self._db.dialect == "postgresql":
            # one short statement, parsed once, with one text parameter that orjson writes in C: a VALUES
            # list of thousands of placeholders, or arrays, cost far more per batch (docs/benchmarks.md)
            return await self._db.execute(_INSERT_JSON, (orjson.dumps(values).decode(),))
        chunks = list(_chunks(values))
        if len(chunks) == 1:
            return await self._db.execute(_insertrow_values(len(chunks[0])), _flat(chunks[0]))
        added = 0
        async with self._db.transaction() as tx:
            for chunk in chunks:
                added += await tx.execute(_insertrow_values(len(chunk)), _flat(chunk))
        return added

    async def _clashing(self, offered: list[dict[str, Any]]) -> list[str]:
        """Ids of offered rows that differ from the row stored under their id. Only runs when a batch
        met rows already stored: after a crash replay, or a retry whose first answer was lost."""
        clashing = []
        for i in range(0, len(offered), ROWS_PER_STATEMENT):
            chunk = {values["request_id"]: values for values in offered[i : i + ROWS_PER_STATEMENT]}
            found = await self._db.fetch_all(
                f"SELECT * FROM {TABLE} WHERE request_id IN ({', '.join('?' * len(chunk))})", list(chunk)
            )
            clashing += [row["request_id"] for row in found if not same_row(row, chunk[row["request_id"]])]
        return clashing

    async def get(self, request_id: str) -> LedgerRow | None:
        found = await self._db.fetch_one(f"SELECT * FROM {TABLE} WHERE request_id = ?", (request_id,))
        return None if found is None else ledger_row(found)

    async def totals(self, tenant: str | None, start: datetime, end: datetime) -> list[LedgerTotal]:
        """Sums over the period's rows of one tenant (None: every tenant), per tier, rated tier, model and
        currency, in that order."""
        where, params = _period(tenant, start, end)
        found = await self._db.fetch_all(
            "SELECT tier, rated_tier, model, currency, COUNT(*) AS requests,"
            " SUM(prompt_tokens) AS prompt_tokens, SUM(cached_tokens) AS cached_tokens,"
            " SUM(completion_tokens) AS completion_tokens, SUM(reasoning_tokens) AS reasoning_tokens,"
            f" SUM(total_micros) AS total FROM {TABLE} WHERE {where}"
            " GROUP BY tier, rated_tier, model, currency ORDER BY tier, rated_tier, model, currency",
            params,
        )
        # int(): PostgreSQL's SUM of BIGINT is NUMERIC, which psycopg reads as an (exact) Decimal
        return [
            LedgerTotal(
                row["tier"], row["rated_tier"], row["model"], row["currency"], *(int(row[k]) for k in _SUMS)
            )
            for row in found
        ]

    async def total(self, tenant: str | None, start: datetime, end: datetime) -> int:
        """The period's charges in micros. ValueError when they are in more than one currency: adding
        micros of different currencies gives a number that is no amount of money."""
        where, params = _period(tenant, start, end)
        found = await self._db.fetch_all(
            f"SELECT currency, SUM(total_micros) AS total FROM {TABLE} WHERE {where} GROUP BY currency",
            params,
        )
        if len(found) > 1:
            raise ValueError(f"the period's charges are in {sorted(row['currency'] for row in found)}")
        return int(found[0]["total"]) if found else 0

    async def spent(
        self,
        start: datetime,
        end: datetime | None,
        *,
        tenant: str | None = None,
        key_id: str | None = None,
        ended_before: datetime | None = None,
    ) -> int:
        """The micros charged to a tenant or a key (one of them) for requests started in [start, end) (end
        None: ever since), only those that ended before `ended_before` when it is given: what a budget
        reads of the spending that came before it started counting."""
        if (tenant is None) == (key_id is None):
            raise ValueError("spent() sums the rows of a tenant or of a key: give exactly one")
        bounds = [moment for moment in (start, end, ended_before) if moment is not None]
        for moment in bounds:
            if moment.utcoffset() is None:
                raise ValueError(f"time bound {moment.isoformat()} has no time zone")
        where = "tenant = ?" if tenant is not None else "key_id = ?"
        params: list[Any] = [tenant if tenant is not None else key_id]
        where += " AND started_at >= ?"
        params.append(start)
        if end is not None:
            where += " AND started_at < ?"
            params.append(end)
        if ended_before is not None:
            where += " AND ended_at < ?"
            params.append(ended_before)
        found = await self._db.fetch_one(
            f"SELECT SUM(total_micros) AS total FROM {TABLE} WHERE {where}", params
        )
        return int(found["total"]) if found is not None and found["total"] is not None else 0

    async def rows(
        self, tenant: str | None, start: datetime, end: datetime, *, batch: int = 1000
    ) -> AsyncIterator[LedgerRow]:
        """The period's rows by (started_at, request_id), fetched `batch` at a time: each query resumes after
        the last row seen (keyset pagination), so an export streams in constant memory and never skips or
        repeats a row, even while new rows arrive."""
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        where, params = _period(tenant, start, end)
        after: tuple[Any, str] | None = None
        while True:
            # the stored value itself is the cursor: no reparsing, so no drift in precision or format
            resume = "" if after is None else " AND (started_at, request_id) > (?, ?)"
            found = await self._db.fetch_all(
                f"SELECT * FROM {TABLE} WHERE {where}{resume} ORDER BY started_at, request_id LIMIT ?",
                (*params, *(after or ()), batch),
            )
            for row in found:
                yield ledger_row(row)
            if len(found) < batch:
                return
            after = (found[-1]["started_at"], found[-1]["request_id"])


def _request_id(row: LedgerRow) -> str:
    return row.record.request_id


def _chunks(values: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Batches cut into statements of ROWS_PER_STATEMENT rows, then of powers of two: at most ten distinct
    statement shapes ever. A shape per batch size would fill SQLite's statement cache with hundreds of large
    prepared statements (each holds its thousands of parameters): memory that grew with every new size."""
    start = 0
    while start < len(values):
        left = len(values) - start
        size = ROWS_PER_STATEMENT if left >= ROWS_PER_STATEMENT else 1 << (left.bit_length() - 1)
        yield values[start : start + size]
        start += size


def _insertrow_values(count: int) -> str:
    values = ", ".join([_ROW_PLACEHOLDER] * count)
    return f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES {values} ON CONFLICT (request_id) DO NOTHING"


def _flat(chunk: list[dict[str, Any]]) -> list[Any]:
    return [value for row in chunk for value in row.values()]


def _period(tenant: str | None, start: datetime, end: datetime) -> tuple[str, tuple[Any, ...]]:
    for moment in (start, end):
        if moment.utcoffset() is None:
            raise ValueError(f"period bound {moment.isoformat()} has no time zone")
    if tenant is None:
        return "started_at >= ? AND started_at < ?", (start, end)
    return "tenant = ? AND started_at >= ? AND started_at < ?", (tenant, start, end)
