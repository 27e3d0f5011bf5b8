"""What the console reads of the ledger beyond what pricing's `Ledger` offers: spend by day and tier, the
latest requests, the top tenants. Every tenant query is filtered by the tenant it is given: the console
passes the signed-in tenant, never a value from the request."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from gateway.database import Database
from pricing import LedgerRow
from pricing.ledger_rows import ledger_row
from pricing.ledger_schema import TABLE

__all__ = ["DailySpend", "TenantSpend", "daily_spend", "recent_requests", "top_tenants"]


@dataclass(frozen=True, slots=True)
class DailySpend:
    day: str  # YYYY-MM-DD, UTC
    by_tier: dict[str, int]  # micros per tier asked for

    @property
    def total(self) -> int:
        return sum(self.by_tier.values())


@dataclass(frozen=True, slots=True)
class TenantSpend:
    tenant: str
    currency: str
    requests: int
    total: int  # micros


def _day(database: Database) -> str:
    # SQLite keeps fixed-width ISO-8601 UTC text; PostgreSQL a timestamptz
    if database.dialect == "sqlite":
        return "substr(started_at, 1, 10)"
    return "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


async def daily_spend(database: Database, tenant: str, start: datetime, end: datetime) -> list[DailySpend]:
    found = await database.fetch_all(
        f"SELECT {_day(database)} AS day, tier, SUM(total_micros) AS total FROM {TABLE}"
        " WHERE tenant = ? AND started_at >= ? AND started_at < ? GROUP BY 1, tier ORDER BY 1, tier",
        (tenant, start, end),
    )
    days: dict[str, dict[str, int]] = defaultdict(dict)
    for row in found:
        days[str(row["day"])][str(row["tier"])] = int(row["total"])  # PostgreSQL's SUM is a Decimal
    return [DailySpend(day, tiers) for day, tiers in sorted(days.items())]


async def recent_requests(database: Database, tenant: str, limit: int = 50) -> list[LedgerRow]:
    found = await database.fetch_all(
        f"SELECT * FROM {TABLE} WHERE tenant = ? ORDER BY started_at DESC, request_id DESC LIMIT ?",
        (tenant, limit),
    )
    return [ledger_row(row) for row in found]


async def top_tenants(
    database: Database, start: datetime, end: datetime, limit: int = 10
) -> list[TenantSpend]:
    found = await database.fetch_all(
        f"SELECT tenant, currency, COUNT(*) AS requests, SUM(total_micros) AS total FROM {TABLE}"
        " WHERE tenant IS NOT NULL AND started_at >= ? AND started_at < ?"
        " GROUP BY tenant, currency ORDER BY total DESC, tenant LIMIT ?",
        (start, end, limit),
    )
    return [
        TenantSpend(str(row["tenant"]), str(row["currency"]), int(row["requests"]), int(row["total"]))
        for row in found
    ]
