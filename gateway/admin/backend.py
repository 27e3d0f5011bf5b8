"""Managing tenants and keys from the command line: straight in the configured database, or through a
running gateway's admin API. Both answer with the admin API's JSON shapes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import httpx

from gateway.accounting.bookkeeper import ledger_migrations, ledger_spent
from gateway.admin.views import budget_json, key_json, tenant_json
from gateway.budgets import Budget, LocalBudgets, Period, Scope, Window
from gateway.database import Database, open_database
from gateway.keys import UNCHANGED, KeyStore, KeyStoreConflict, KeyStoreNotFound, Unchanged
from gateway.limits import Quota
from gateway.settings import Settings
from gateway.tiers import Tier
from pricing import Ledger, load_price_book, parse_money

__all__ = ["AdminBackend", "AdminError", "DirectAdmin", "RemoteAdmin"]

Limits = dict[str, dict[str, int | None]]


class AdminError(Exception):
    """A refused admin operation, with the reason to show the operator."""


class AdminBackend(Protocol):
    async def create_tenant(
        self, tenant_id: str, name: str | None, priority_class: str = "standard"
    ) -> dict[str, Any]: ...
    async def update_tenant(
        self, tenant_id: str, *, name: str | None, priority_class: str | None
    ) -> dict[str, Any]: ...
    async def list_tenants(self) -> list[dict[str, Any]]: ...
    async def create_key(
        self,
        tenant: str,
        *,
        name: str,
        tiers: Sequence[str],
        models: Sequence[str] | None,
        limits: Limits,
        expires_at: datetime | None,
        max_concurrent: int | None = None,
    ) -> dict[str, Any]: ...
    async def list_keys(self, tenant: str | None) -> list[dict[str, Any]]: ...
    async def update_limits(
        self, key_id: str, limits: Limits | None, max_concurrent: int | Unchanged | None = UNCHANGED
    ) -> dict[str, Any]:
        """`limits` None: the rate limits as they are; `max_concurrent` None: no cap."""
        ...

    async def revoke_key(self, key_id: str) -> dict[str, Any]: ...
    async def list_budgets(self, tenant: str) -> list[dict[str, Any]]: ...
    async def set_budget(self, scope: Scope, subject: str, period: Period, limit: str) -> dict[str, Any]: ...
    async def delete_budget(self, scope: Scope, subject: str, period: Period) -> dict[str, Any]: ...
    async def aclose(self) -> None: ...


class DirectAdmin:
    """Works on the database named in the settings; no gateway needs to run."""

    def __init__(self, settings: Settings, database: Database, store: KeyStore) -> None:
        self._settings = settings
        self._database = database
        self._store = store

    @classmethod
    async def open(cls, settings: Settings) -> DirectAdmin:
        database = await open_database(settings.database.url)
        store = KeyStore(database)
        await store.migrate()
        return cls(settings, database, store)

    async def create_tenant(
        self, tenant_id: str, name: str | None, priority_class: str = "standard"
    ) -> dict[str, Any]:
        try:
            return tenant_json(
                await self._store.create_tenant(tenant_id, name, priority_class=priority_class)
            )
        except ValueError as exc:
            raise AdminError(str(exc)) from None
        except KeyStoreConflict:
            raise AdminError(f"the tenant {tenant_id!r} exists already") from None

    async def update_tenant(
        self, tenant_id: str, *, name: str | None, priority_class: str | None
    ) -> dict[str, Any]:
        try:
            return tenant_json(
                await self._store.update_tenant(tenant_id, name=name, priority_class=priority_class)
            )
        except KeyStoreNotFound:
            raise AdminError(f"no tenant {tenant_id!r}") from None
        except ValueError as exc:
            raise AdminError(str(exc)) from None

    async def list_tenants(self) -> list[dict[str, Any]]:
        return [tenant_json(tenant) for tenant in await self._store.list_tenants()]

    async def create_key(
        self,
        tenant: str,
        *,
        name: str,
        tiers: Sequence[str],
        models: Sequence[str] | None,
        limits: Limits,
        expires_at: datetime | None,
        max_concurrent: int | None = None,
    ) -> dict[str, Any]:
        self._check(tiers, models)
        try:
            key, secret = await self._store.create_key(
                tenant,
                name=name,
                tiers=tiers,
                models=models,
                quotas=_quotas(limits),
                expires_at=expires_at,
                max_concurrent=max_concurrent,
            )
        except KeyStoreNotFound:
            raise AdminError(f"no tenant {tenant!r}") from None
        except ValueError as exc:
            raise AdminError(str(exc)) from None
        return {**key_json(key), "secret": str(secret)}

    async def list_keys(self, tenant: str | None) -> list[dict[str, Any]]:
        return [key_json(key) for key in await self._store.list_keys(tenant)]

    async def update_limits(
        self, key_id: str, limits: Limits | None, max_concurrent: int | Unchanged | None = UNCHANGED
    ) -> dict[str, Any]:
        quotas = _quotas(limits) if limits is not None else None
        try:
            return key_json(
                await self._store.update_key(key_id, quotas=quotas, max_concurrent=max_concurrent)
            )
        except KeyStoreNotFound:
            raise AdminError(f"no key {key_id!r}") from None
        except ValueError as exc:
            raise AdminError(str(exc)) from None

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        try:
            return key_json(await self._store.revoke_key(key_id))
        except KeyStoreNotFound:
            raise AdminError(f"no key {key_id!r}") from None

    async def list_budgets(self, tenant: str) -> list[dict[str, Any]]:
        return await self._budgets_json(tenant, await self._store.list_budgets(tenant))

    async def set_budget(self, scope: Scope, subject: str, period: Period, limit: str) -> dict[str, Any]:
        try:
            amount = parse_money(limit)
        except ValueError as exc:
            raise AdminError(f"limit: {exc}") from None
        try:
            budget = Budget(scope, subject, period, amount)
            tenant = await self._store.set_budget(budget)
        except KeyStoreNotFound:
            raise AdminError(f"no {scope} {subject!r}") from None
        (body,) = await self._budgets_json(tenant, [budget])
        return body

    async def delete_budget(self, scope: Scope, subject: str, period: Period) -> dict[str, Any]:
        if not await self._store.delete_budget(scope, subject, period):
            raise AdminError(f"no {period} budget for the {scope} {subject!r}")
        return {"scope": scope, "subject": subject, "period": period, "deleted": True}

    async def _budgets_json(self, tenant: str, budgets: list[Budget]) -> list[dict[str, Any]]:
        """Where each budget stands by the ledger (requests still running elsewhere are not in it)."""
        if self._settings.pricing.book is None:
            raise AdminError("the config has no pricing.book: budgets are amounts of its currency")
        currency = load_price_book(self._settings.pricing.book).currency
        await self._database.migrate("ledger", ledger_migrations())
        ledger = Ledger(self._database)

        async def every_row(budget: Budget, window: Window, ended_before: datetime | None) -> int:
            return await ledger_spent(ledger, budget, window, None)  # all of it, whenever it ended

        counted = LocalBudgets(every_row)
        statuses = await counted.status(tenant, budgets, time.time())
        return [budget_json(status.budget, currency, status) for status in statuses]

    async def aclose(self) -> None:
        await self._database.aclose()

    def _check(self, tiers: Sequence[str], models: Sequence[str] | None) -> None:
        unknown_tiers = sorted(set(tiers) - {tier.value for tier in Tier})
        if unknown_tiers:
            raise AdminError(f"unknown tiers: {', '.join(unknown_tiers)} (tiers: fast, deliberate)")
        unknown_models = sorted(set(models or ()) - set(self._settings.models))
        if unknown_models:
            raise AdminError(f"unknown models: {', '.join(unknown_models)}")


class RemoteAdmin:
    """Talks to a running gateway's /admin/ API with an admin token."""

    def __init__(
        self, base_url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/admin",
            headers={"authorization": f"Bearer {token}"},
            transport=transport,
            timeout=10.0,
        )

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, params: dict[str, str] | None = None
    ) -> Any:
        try:
            response = await self._client.request(method, path, json=body, params=params or None)
        except httpx.HTTPError as exc:
            raise AdminError(f"cannot reach the gateway: {exc}") from None
        if response.is_error:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise AdminError(f"HTTP {response.status_code}: {message}")
        return response.json()

    async def create_tenant(
        self, tenant_id: str, name: str | None, priority_class: str = "standard"
    ) -> dict[str, Any]:
        body = {"id": tenant_id, "name": name, "priority_class": priority_class}
        result: dict[str, Any] = await self._call("POST", "/tenants", body)
        return result

    async def update_tenant(
        self, tenant_id: str, *, name: str | None, priority_class: str | None
    ) -> dict[str, Any]:
        body = {"name": name, "priority_class": priority_class}
        result: dict[str, Any] = await self._call("PATCH", f"/tenants/{tenant_id}", body)
        return result

    async def list_tenants(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._call("GET", "/tenants"))["data"]
        return result

    async def create_key(
        self,
        tenant: str,
        *,
        name: str,
        tiers: Sequence[str],
        models: Sequence[str] | None,
        limits: Limits,
        expires_at: datetime | None,
        max_concurrent: int | None = None,
    ) -> dict[str, Any]:
        body = {
            "tenant": tenant,
            "name": name,
            "tiers": list(tiers),
            "models": list(models) if models is not None else None,
            "limits": limits,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "max_concurrent": max_concurrent,
        }
        result: dict[str, Any] = await self._call("POST", "/keys", body)
        return result

    async def list_keys(self, tenant: str | None) -> list[dict[str, Any]]:
        params = {"tenant": tenant} if tenant else {}
        result: list[dict[str, Any]] = (await self._call("GET", "/keys", params=params))["data"]
        return result

    async def update_limits(
        self, key_id: str, limits: Limits | None, max_concurrent: int | Unchanged | None = UNCHANGED
    ) -> dict[str, Any]:
        body: dict[str, Any] = {} if limits is None else {"limits": limits}
        if max_concurrent is not UNCHANGED:
            body["max_concurrent"] = max_concurrent  # null: no cap
        result: dict[str, Any] = await self._call("PATCH", f"/keys/{key_id}", body)
        return result

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", f"/keys/{key_id}/revoke")
        return result

    async def list_budgets(self, tenant: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._call("GET", f"/tenants/{tenant}/budgets"))["data"]
        return result

    async def set_budget(self, scope: Scope, subject: str, period: Period, limit: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "PUT", _budget_path(scope, subject, period), {"limit": limit}
        )
        return result

    async def delete_budget(self, scope: Scope, subject: str, period: Period) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("DELETE", _budget_path(scope, subject, period))
        return result

    async def aclose(self) -> None:
        await self._client.aclose()


def _budget_path(scope: Scope, subject: str, period: Period) -> str:
    return f"/{'tenants' if scope == 'tenant' else 'keys'}/{subject}/budgets/{period}"


def _quotas(limits: Limits) -> dict[str, Quota]:
    try:
        return {tier: Quota(rpm=limit.get("rpm"), tpm=limit.get("tpm")) for tier, limit in limits.items()}
    except ValueError as exc:
        raise AdminError(str(exc)) from None
