"""The key store's tables. Append migrations; never edit one that has shipped.

Tiers, models and quotas are JSON text in both dialects: they are read and written whole, with the key,
and never queried by their parts, so portable text beats per-dialect array and JSON types.
"""

from __future__ import annotations

from gateway.database import Migration

__all__ = ["COMPONENT", "MIGRATIONS"]

COMPONENT = "keys"


def _tenants_and_keys(timestamp: str, blob: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created_at {timestamp} NOT NULL
        )""",
        f"""CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            name TEXT NOT NULL,
            secret_sha256 {blob} NOT NULL,
            tiers TEXT NOT NULL,
            models TEXT,
            quotas TEXT NOT NULL,
            expires_at {timestamp},
            created_at {timestamp} NOT NULL,
            last_used_at {timestamp},
            revoked_at {timestamp}
        )""",
        "CREATE INDEX api_keys_tenant ON api_keys (tenant_id)",
    )


def _budgets(timestamp: str, money: str) -> tuple[str, ...]:
    # scope + subject: a tenant's budget (subject = tenant id) or a key's (subject = key id); tenant_id is
    # the tenant either way, so one indexed read finds every budget that applies to a key
    return (
        f"""CREATE TABLE budgets (
            scope TEXT NOT NULL CHECK (scope IN ('tenant', 'key')),
            subject TEXT NOT NULL,
            period TEXT NOT NULL CHECK (period IN ('daily', 'monthly', 'total')),
            tenant_id TEXT NOT NULL REFERENCES tenants (id),
            limit_micros {money} NOT NULL CHECK (limit_micros >= 0),
            created_at {timestamp} NOT NULL,
            updated_at {timestamp} NOT NULL,
            PRIMARY KEY (scope, subject, period)
        )""",
        "CREATE INDEX budgets_tenant ON budgets (tenant_id)",
    )


# a tenant's priority class (docs/overload.md): its requests wait ahead of standard ones and are priced by
# the price book's class rule; a key's cap on its requests in flight (NULL: none)
_CLASS_AND_CONCURRENCY = (
    "ALTER TABLE tenants ADD COLUMN priority_class TEXT NOT NULL DEFAULT 'standard'"
    " CHECK (priority_class IN ('standard', 'premium'))",
    "ALTER TABLE api_keys ADD COLUMN max_concurrent INTEGER CHECK (max_concurrent >= 1)",
)

MIGRATIONS = (
    Migration(
        1,
        "tenants and api keys",
        sqlite=_tenants_and_keys("TEXT", "BLOB"),
        postgresql=_tenants_and_keys("TIMESTAMPTZ", "BYTEA"),
    ),
    Migration(
        2,
        "spending budgets of tenants and keys",
        # SQLite would store 1.5 as REAL in an INTEGER column: the CHECK keeps money whole
        sqlite=_budgets("TEXT", "INTEGER CHECK (typeof(limit_micros) = 'integer')"),
        postgresql=_budgets("TIMESTAMPTZ", "BIGINT"),
    ),
    Migration(
        3,
        "tenants' priority classes, keys' concurrency limits",
        sqlite=_CLASS_AND_CONCURRENCY,
        postgresql=_CLASS_AND_CONCURRENCY,
    ),
)
