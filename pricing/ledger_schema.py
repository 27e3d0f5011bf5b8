"""The ledger table, as migrations for the storage layer to run (plain data: pricing imports no gateway)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LEDGER_MIGRATIONS", "TABLE", "LedgerMigration"]

TABLE = "ledger"


@dataclass(frozen=True, slots=True)
class LedgerMigration:
    """Plain data with the fields of `gateway.database.Migration`, which the gateway converts it to."""

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]


def _create_table(*, text_time: bool) -> str:
    # migration 1's DDL: applied migrations are history, so never edit it; a new column is a new migration
    # SQLite has no BIGINT or BOOLEAN: INTEGER holds 64 bits, and the CHECKs keep a float out of a money or
    # token column (SQLite would otherwise store 1.5 as REAL). PostgreSQL's types refuse it on their own.
    big = "INTEGER" if text_time else "BIGINT"
    flag = "INTEGER" if text_time else "BOOLEAN"
    ratio = "REAL" if text_time else "DOUBLE PRECISION"  # the agreement ratio: never money
    time = "TEXT" if text_time else "TIMESTAMPTZ"
    # byte order, as in SQLite: exports sort alike on both, and key comparisons skip locale rules
    key = "TEXT" if text_time else 'TEXT COLLATE "C"'

    def whole(column: str) -> str:
        return f"{column} {big} NOT NULL" + (f" CHECK (typeof({column}) = 'integer')" if text_time else "")

    return f"""
    CREATE TABLE {TABLE} (
        request_id {key} PRIMARY KEY,
        tenant TEXT,
        key_id TEXT,
        tier TEXT NOT NULL,
        model TEXT NOT NULL,
        served_model TEXT NOT NULL,
        replica TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        {whole("prompt_tokens")},
        {whole("cached_tokens")},
        {whole("completion_tokens")},
        {whole("reasoning_tokens")},
        estimated {flag} NOT NULL,
        depth_samples {big} NOT NULL,
        depth_extensions {big} NOT NULL,
        depth_floor {big},
        depth_floor_met {flag},
        depth_agreement {ratio},
        outcome TEXT NOT NULL,
        streamed {flag} NOT NULL,
        started_at {time} NOT NULL,
        first_token_at {time},
        ended_at {time} NOT NULL,
        currency TEXT NOT NULL,
        price_version TEXT NOT NULL,
        rated_tier TEXT NOT NULL,
        {whole("total_micros")},
        lines TEXT NOT NULL
    )"""


# keyset pagination and period sums walk these, for all tenants or for one
_INDEXES = (
    f"CREATE INDEX {TABLE}_period ON {TABLE} (started_at, request_id)",
    f"CREATE INDEX {TABLE}_tenant_period ON {TABLE} (tenant, started_at, request_id)",
)
# a key's budgets read its spending by period
_KEY_INDEX = f"CREATE INDEX {TABLE}_key_period ON {TABLE} (key_id, started_at)"

# the depth audit's findings (docs/deliberation.md#the-depth-audit): the reasons, comma-separated; NULL for
# none (and for every row written before the audit)
_SHORTFALL_COLUMN = f"ALTER TABLE {TABLE} ADD COLUMN depth_shortfall TEXT"
_CASCADE_COLUMN = f"ALTER TABLE {TABLE} ADD COLUMN cascade TEXT"
# the tenant's priority class, when not standard (NULL for standard, and for every row written before it):
# the row's record carries it, and its charge's class surcharge hangs on it
_CLASS_COLUMN = f"ALTER TABLE {TABLE} ADD COLUMN priority_class TEXT"

LEDGER_MIGRATIONS: tuple[LedgerMigration, ...] = (
    LedgerMigration(
        1,
        "ledger rows, one per request",
        sqlite=(_create_table(text_time=True), *_INDEXES),
        postgresql=(_create_table(text_time=False), *_INDEXES),
    ),
    LedgerMigration(
        2,
        "a key's rows by period, for its budgets",
        sqlite=(_KEY_INDEX,),
        postgresql=(_KEY_INDEX,),
    ),
    LedgerMigration(
        3,
        "the depth audit's shortfall reasons",
        sqlite=(_SHORTFALL_COLUMN,),
        postgresql=(_SHORTFALL_COLUMN,),
    ),
    LedgerMigration(
        4,
        "the cascade tier's stages on its rows (escalated, confidence, threshold, the fast stage's counts)",
        sqlite=(_CASCADE_COLUMN,),
        postgresql=(_CASCADE_COLUMN,),
    ),
    LedgerMigration(
        5,
        "the tenant's priority class on its rows (premium; NULL: standard)",
        sqlite=(_CLASS_COLUMN,),
        postgresql=(_CLASS_COLUMN,),
    ),
)
