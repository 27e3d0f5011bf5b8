"""The key store: tenants and API keys in the shared database.

A key's secret is never stored: only its SHA-256 (see `material`). The full key exists once, in what
`create_key` returns.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Literal

from gateway.budgets.budget import Budget, Period, Scope, check_names
from gateway.database import Database, IntegrityError, Queries, Row, read_timestamp
from gateway.keys import checks
from gateway.keys._exceptions import KeyStoreConflict, KeyStoreNotFound
from gateway.keys.material import new_key, new_key_id
from gateway.keys.records import ApiKey, Tenant
from gateway.keys.schema import COMPONENT, MIGRATIONS
from gateway.limits.quota import Quota

__all__ = ["UNCHANGED", "KeyStore", "Unchanged"]


class _Unchanged(enum.Enum):
    UNCHANGED = "unchanged"


# `update_key` leaves a field alone when given this; None is a value there ("every model", "never")
UNCHANGED: Final = _Unchanged.UNCHANGED
Unchanged = Literal[_Unchanged.UNCHANGED]

_TENANT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_KEY_COLUMNS = (
    "id, tenant_id, name, tiers, models, quotas, expires_at, created_at, last_used_at, revoked_at,"
    " max_concurrent"
)
# a key as read: its columns and its tenant's priority class
_KEY_READ = (
    ", ".join(f"k.{column.strip()}" for column in _KEY_COLUMNS.split(","))
    + ", t.priority_class FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
)
_TENANT_COLUMNS = "id, name, created_at, priority_class"
_BUDGET_COLUMNS = "scope, subject, period, limit_micros"
_ID_ATTEMPTS = 3  # ids are random (60 bits): a clash is all but impossible, and retried


class KeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"KeyStore({self._db!r})"

    async def migrate(self) -> None:
        await self._db.migrate(COMPONENT, MIGRATIONS)

    # -- tenants ----------------------------------------------------------------------------------
    async def create_tenant(
        self, tenant_id: str, name: str | None = None, *, priority_class: str = "standard"
    ) -> Tenant:
        if not isinstance(tenant_id, str) or _TENANT_ID.fullmatch(tenant_id) is None:
            raise ValueError(
                f"invalid tenant id {tenant_id!r}: 1-64 characters of a-z, 0-9, '_' and '-',"
                " starting with a letter or digit"
            )
        tenant = Tenant(
            tenant_id,
            checks.text(name, "name") if name is not None else tenant_id,
            _now(),
            checks.priority_class(priority_class),
        )
        try:
            await self._db.execute(
                f"INSERT INTO tenants ({_TENANT_COLUMNS}) VALUES (?, ?, ?, ?)",
                (tenant.id, tenant.name, tenant.created_at, tenant.priority_class),
            )
        except IntegrityError:
            raise KeyStoreConflict(f"tenant {tenant_id!r} exists already") from None
        return tenant

    async def list_tenants(self) -> list[Tenant]:
        rows = await self._db.fetch_all(f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY id")
        return [_tenant_from_row(row) for row in rows]

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = await self._db.fetch_one(f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE id = ?", (tenant_id,))
        return _tenant_from_row(row) if row is not None else None

    async def update_tenant(
        self, tenant_id: str, *, name: str | None = None, priority_class: str | None = None
    ) -> Tenant:
        """Change the given fields. A new priority class reaches its keys' requests within the
        authenticators' cache TTL."""
        new_name = checks.text(name, "name") if name is not None else None
        new_class = checks.priority_class(priority_class) if priority_class is not None else None
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE tenants SET name = COALESCE(?, name), priority_class = COALESCE(?, priority_class)"
                " WHERE id = ?",
                (new_name, new_class, tenant_id),
            )
            row = await tx.fetch_one(f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE id = ?", (tenant_id,))
        if row is None:
            raise KeyStoreNotFound(f"no tenant {tenant_id!r}")
        return _tenant_from_row(row)

    # -- keys -------------------------------------------------------------------------------------
    async def create_key(
        self,
        tenant_id: str,
        *,
        name: str = "",
        tiers: Iterable[str],
        models: Iterable[str] | None = None,
        quotas: Mapping[str, Quota] | None = None,
        expires_at: datetime | None = None,
        max_concurrent: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and, this once, its full text `tg-<id>-<secret>` (its repr is masked)."""
        granted = checks.tiers(tiers)
        key = ApiKey(
            id="",
            tenant_id=tenant_id,
            name=checks.text(name, "name"),
            tiers=granted,
            models=checks.models(models),
            quotas=checks.quotas(quotas or {}, granted),
            expires_at=checks.aware(expires_at, "expires_at"),
            created_at=_now(),
            last_used_at=None,
            revoked=False,
            max_concurrent=checks.max_concurrent(max_concurrent),
        )
        for attempt in range(1, _ID_ATTEMPTS + 1):
            key = replace(key, id=new_key_id())
            issued, digest = new_key(key.id)
            try:
                async with self._db.transaction() as tx:
                    tenant = await tx.fetch_one(
                        "SELECT priority_class FROM tenants WHERE id = ?", (tenant_id,)
                    )
                    if tenant is None:
                        raise KeyStoreNotFound(f"no tenant {tenant_id!r}")
                    key = replace(key, priority_class=tenant["priority_class"])
                    await tx.execute(
                        f"INSERT INTO api_keys ({_KEY_COLUMNS}, secret_sha256)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (*_key_values(key), None, key.max_concurrent, digest),
                    )
            except IntegrityError:
                if attempt == _ID_ATTEMPTS:
                    raise
                continue
            return key, issued
        raise AssertionError("unreachable")  # the loop returns or raises

    async def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        """Every key, or a tenant's (an unknown tenant has none), oldest first."""
        where, params = ("WHERE k.tenant_id = ?", (tenant_id,)) if tenant_id is not None else ("", ())
        rows = await self._db.fetch_all(f"SELECT {_KEY_READ} {where} ORDER BY k.created_at, k.id", params)
        return [_key_from_row(row) for row in rows]

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self._db.fetch_one(f"SELECT {_KEY_READ} WHERE k.id = ?", (key_id,))
        return _key_from_row(row) if row is not None else None

    async def update_key(
        self,
        key_id: str,
        *,
        name: str | None = None,
        tiers: Iterable[str] | None = None,
        models: Iterable[str] | Unchanged | None = UNCHANGED,
        quotas: Mapping[str, Quota] | None = None,
        expires_at: datetime | Unchanged | None = UNCHANGED,
        max_concurrent: int | Unchanged | None = UNCHANGED,
    ) -> ApiKey:
        """Change the given fields. Narrowing `tiers` without new `quotas` drops the quotas of the tiers
        taken away; new `quotas` replace all of them and may only name the key's tiers."""
        # checked before the transaction: invalid input costs no round trip
        new_name = checks.text(name, "name") if name is not None else None
        new_tiers = checks.tiers(tiers) if tiers is not None else None
        new_models = checks.models(models) if models is not UNCHANGED else UNCHANGED
        new_expiry = checks.aware(expires_at, "expires_at") if expires_at is not UNCHANGED else UNCHANGED
        new_cap = checks.max_concurrent(max_concurrent) if max_concurrent is not UNCHANGED else UNCHANGED
        # PostgreSQL: lock the row so two concurrent updates of different fields do not lose one
        # (SQLite's BEGIN IMMEDIATE already serializes writers)
        lock = " FOR UPDATE OF k" if self._db.dialect == "postgresql" else ""
        async with self._db.transaction() as tx:
            row = await tx.fetch_one(f"SELECT {_KEY_READ} WHERE k.id = ?{lock}", (key_id,))
            if row is None:
                raise KeyStoreNotFound(f"no key {key_id!r}")
            key = _key_from_row(row)
            granted = new_tiers if new_tiers is not None else key.tiers
            key = replace(
                key,
                name=new_name if new_name is not None else key.name,
                tiers=granted,
                models=new_models if new_models is not UNCHANGED else key.models,
                quotas=(
                    checks.quotas(quotas, granted)
                    if quotas is not None
                    else checks.quotas(
                        {tier: q for tier, q in key.quotas.items() if tier in granted}, granted
                    )
                ),
                expires_at=new_expiry if new_expiry is not UNCHANGED else key.expires_at,
                max_concurrent=new_cap if new_cap is not UNCHANGED else key.max_concurrent,
            )
            await tx.execute(
                "UPDATE api_keys SET name = ?, tiers = ?, models = ?, quotas = ?, expires_at = ?,"
                " max_concurrent = ? WHERE id = ?",
                (*_key_values(key)[2:7], key.max_concurrent, key.id),
            )
        return key

    async def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke the key (again: no change). Authenticators see it within their cache TTL."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (_now(), key_id)
            )
            row = await tx.fetch_one(f"SELECT {_KEY_READ} WHERE k.id = ?", (key_id,))
        if row is None:
            raise KeyStoreNotFound(f"no key {key_id!r}")
        return _key_from_row(row)

    async def record_use(self, last_used: Mapping[str, datetime]) -> None:
        """Set last-used times in one batch; a time older than the stored one (another replica's
        newer flush) leaves it alone. Unknown ids are ignored."""
        if not last_used:
            return
        # sorted ids: replicas flushing overlapping batches lock rows in the same order, so never deadlock
        batch = [(used, key_id, used) for key_id, used in sorted(last_used.items())]
        for used, _, _ in batch:
            checks.aware(used, "last used time")
        await self._db.execute_many(
            "UPDATE api_keys SET last_used_at = ?"
            " WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
            batch,
        )

    async def lookup(self, key_id: str) -> tuple[ApiKey, bytes] | None:
        """The key, with the budgets that apply to it, and its secret's SHA-256, for the authenticator."""
        row = await self._db.fetch_one(f"SELECT k.secret_sha256, {_KEY_READ} WHERE k.id = ?", (key_id,))
        if row is None:
            return None
        key = _key_from_row(row)
        budgets = await self._db.fetch_all(
            f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE tenant_id = ?"
            " AND (scope = 'tenant' OR subject = ?) ORDER BY scope DESC, period",
            (key.tenant_id, key.id),
        )
        return replace(key, budgets=tuple(_budget_from_row(b) for b in budgets)), bytes(row["secret_sha256"])

    # -- budgets ----------------------------------------------------------------------------------
    async def set_budget(self, budget: Budget) -> str:
        """Create the budget, or change the limit of the one with its scope, subject and period; return the
        id of the tenant it belongs to (its subject, or its key's tenant)."""
        now = _now()
        async with self._db.transaction() as tx:
            tenant_id = await _owner(tx, budget.scope, budget.subject)
            await tx.execute(
                f"INSERT INTO budgets ({_BUDGET_COLUMNS}, tenant_id, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope, subject, period)"
                " DO UPDATE SET limit_micros = excluded.limit_micros, updated_at = excluded.updated_at",
                (budget.scope, budget.subject, budget.period, budget.limit, tenant_id, now, now),
            )
        return tenant_id

    async def delete_budget(self, scope: Scope, subject: str, period: Period) -> bool:
        """Whether there was such a budget."""
        check_names(scope, period)
        deleted = await self._db.execute(
            "DELETE FROM budgets WHERE scope = ? AND subject = ? AND period = ?", (scope, subject, period)
        )
        return deleted > 0

    async def list_budgets(self, tenant_id: str | None = None) -> list[Budget]:
        """Every budget, or a tenant's and its keys' (tenant's first), by scope, subject and period."""
        where, params = ("WHERE tenant_id = ?", (tenant_id,)) if tenant_id is not None else ("", ())
        rows = await self._db.fetch_all(
            f"SELECT {_BUDGET_COLUMNS} FROM budgets {where} ORDER BY scope DESC, subject, period", params
        )
        return [_budget_from_row(row) for row in rows]


# -- helpers ----------------------------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(UTC)


async def _owner(tx: Queries, scope: Scope, subject: str) -> str:
    """The tenant a budget's subject belongs to; KeyStoreNotFound when there is no such tenant or key."""
    if scope == "tenant":
        found = await tx.fetch_one("SELECT id FROM tenants WHERE id = ?", (subject,))
        if found is None:
            raise KeyStoreNotFound(f"no tenant {subject!r}")
        return str(found["id"])
    found = await tx.fetch_one("SELECT tenant_id FROM api_keys WHERE id = ?", (subject,))
    if found is None:
        raise KeyStoreNotFound(f"no key {subject!r}")
    return str(found["tenant_id"])


# -- rows -------------------------------------------------------------------------------------------
def _key_values(key: ApiKey) -> tuple[Any, ...]:
    """The columns of `_KEY_COLUMNS` up to last_used_at (the store sets revoked_at alone)."""
    return (
        key.id,
        key.tenant_id,
        key.name,
        json.dumps(sorted(key.tiers)),
        json.dumps(sorted(key.models)) if key.models is not None else None,
        json.dumps({tier: {"rpm": quota.rpm, "tpm": quota.tpm} for tier, quota in key.quotas.items()}),
        key.expires_at,
        key.created_at,
        key.last_used_at,
    )


def _key_from_row(row: Row) -> ApiKey:
    models = row["models"]
    quotas = json.loads(row["quotas"])
    return ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        tiers=frozenset(json.loads(row["tiers"])),
        models=frozenset(json.loads(models)) if models is not None else None,
        quotas=MappingProxyType({tier: Quota(rpm=q["rpm"], tpm=q["tpm"]) for tier, q in quotas.items()}),
        expires_at=_optional_timestamp(row["expires_at"]),
        created_at=read_timestamp(row["created_at"]),
        last_used_at=_optional_timestamp(row["last_used_at"]),
        revoked=row["revoked_at"] is not None,
        max_concurrent=row["max_concurrent"],
        priority_class=row["priority_class"],
    )


def _tenant_from_row(row: Row) -> Tenant:
    return Tenant(row["id"], row["name"], read_timestamp(row["created_at"]), row["priority_class"])


def _budget_from_row(row: Row) -> Budget:
    return Budget(row["scope"], row["subject"], row["period"], int(row["limit_micros"]))


def _optional_timestamp(value: datetime | str | None) -> datetime | None:
    return read_timestamp(value) if value is not None else None
