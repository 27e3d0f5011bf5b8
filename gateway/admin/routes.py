"""The admin API under /admin/: tenants and keys. Protected by admin tokens from settings, never by
an API key. Secrets are shown once, in the answer that creates a key."""

from __future__ import annotations

import hmac
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.responses import Response, StreamingResponse

from gateway.admin.services import Services, services
from gateway.admin.statements import FORMATS, export, invoice, invoice_json, period_bounds
from gateway.admin.views import budget_json, key_json, parse_limit, tenant_json
from gateway.budgets import Budget, Period, Scope
from gateway.http.errors import GatewayError
from gateway.keys import KeyStore, KeyStoreConflict, KeyStoreNotFound
from gateway.limits import MAX_PER_MINUTE, Quota
from gateway.tiers import Tier

__all__ = ["admin_router"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


PriorityClass = Literal["standard", "premium"]  # pricing.PRIORITY_CLASSES


class TenantIn(_Body):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str | None = None
    priority_class: PriorityClass = "standard"


class TenantPatch(_Body):
    name: str | None = None
    priority_class: PriorityClass | None = None


class LimitsIn(_Body):
    rpm: int | None = Field(None, ge=1, le=MAX_PER_MINUTE)
    tpm: int | None = Field(None, ge=1, le=MAX_PER_MINUTE)


class KeyIn(_Body):
    tenant: str
    name: str = ""
    tiers: list[Tier] = Field(min_length=1)
    models: list[str] | None = None  # None: every model
    limits: dict[Tier, LimitsIn] = Field(default_factory=dict)
    expires_at: AwareDatetime | None = None
    max_concurrent: int | None = Field(None, ge=1)  # None: no cap


class KeyPatch(_Body):
    name: str | None = None
    tiers: list[Tier] | None = Field(None, min_length=1)
    models: list[str] | None = None  # explicitly null: every model
    limits: dict[Tier, LimitsIn] | None = None
    expires_at: AwareDatetime | None = None  # explicitly null: never expires
    max_concurrent: int | None = Field(None, ge=1)  # explicitly null: no cap


class BudgetIn(_Body):
    # currency units as a decimal string ("25.00") or a whole number: money is never a float
    limit: StrictStr | StrictInt


async def _store(request: Request) -> KeyStore:
    """The key store, for a caller that presented a valid admin token."""
    state = services(request)
    tokens = [token.get_secret_value().encode() for token in state.settings.auth.admin_tokens]
    if not tokens or state.keys is None:
        raise GatewayError(
            403, "The admin API is disabled: configure auth.admin_tokens.", code="admin_disabled"
        )
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise GatewayError(
            401, "The admin API needs 'Authorization: Bearer <admin token>'.", code="invalid_admin_token"
        )
    if presented.startswith("tg-"):
        raise GatewayError(
            403, "API keys cannot use the admin API; use an admin token.", code="admin_token_required"
        )
    candidate = presented.encode()
    # compare against every token, always: the time taken must not tell which one nearly matched
    if not sum(hmac.compare_digest(candidate, token) for token in tokens):
        raise GatewayError(401, "Incorrect admin token.", code="invalid_admin_token")
    return state.keys


Store = Annotated[KeyStore, Depends(_store)]
admin_router = APIRouter(prefix="/admin")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _quotas(limits: dict[Tier, LimitsIn]) -> dict[str, Quota]:
    return {tier.value: Quota(rpm=limit.rpm, tpm=limit.tpm) for tier, limit in limits.items()}


def _check_models(request: Request, models: list[str] | None) -> None:
    known = {offer.model for offer in services(request).catalog.offers}
    unknown = sorted(set(models or ()) - known)
    if unknown:
        raise GatewayError(
            400, f"Unknown models: {', '.join(unknown)}.", code="model_not_found", param="models"
        )


@admin_router.post("/tenants")
async def create_tenant(body: TenantIn, store: Store) -> Response:
    try:
        tenant = await store.create_tenant(body.id, body.name, priority_class=body.priority_class)
    except ValueError as exc:
        raise GatewayError(400, str(exc), code="invalid_value") from None
    except KeyStoreConflict:
        raise GatewayError(409, f"The tenant `{body.id}` exists already.", code="tenant_exists") from None
    return _json(tenant_json(tenant), 201)


@admin_router.get("/tenants")
async def list_tenants(store: Store) -> Response:
    return _json({"object": "list", "data": [tenant_json(tenant) for tenant in await store.list_tenants()]})


@admin_router.get("/tenants/{tenant_id}")
async def get_tenant(tenant_id: str, store: Store) -> Response:
    tenant = await store.get_tenant(tenant_id)
    if tenant is None:
        raise _no_subject("tenant", tenant_id)
    return _json(tenant_json(tenant))


@admin_router.patch("/tenants/{tenant_id}")
async def update_tenant(tenant_id: str, body: TenantPatch, request: Request, store: Store) -> Response:
    """A new priority class reaches this replica's next request at once, the others' within their cache
    TTL (`auth.cache_ttl_s`)."""
    try:
        tenant = await store.update_tenant(tenant_id, name=body.name, priority_class=body.priority_class)
    except KeyStoreNotFound:
        raise _no_subject("tenant", tenant_id) from None
    except ValueError as exc:
        raise GatewayError(400, str(exc), code="invalid_value") from None
    authenticator = services(request).authenticator
    if authenticator is not None:  # its keys carry its class: read them again
        authenticator.invalidate()
    return _json(tenant_json(tenant))


@admin_router.post("/keys")
async def create_key(body: KeyIn, request: Request, store: Store) -> Response:
    _check_models(request, body.models)
    try:
        key, secret = await store.create_key(
            body.tenant,
            name=body.name,
            tiers=[tier.value for tier in body.tiers],
            models=body.models,
            quotas=_quotas(body.limits),
            expires_at=body.expires_at,
            max_concurrent=body.max_concurrent,
        )
    except KeyStoreNotFound:
        raise GatewayError(
            404, f"No tenant `{body.tenant}`.", code="tenant_not_found", param="tenant"
        ) from None
    except ValueError as exc:
        raise GatewayError(400, str(exc), code="invalid_value") from None
    return _json({**key_json(key), "secret": str(secret)}, 201)


@admin_router.get("/keys")
async def list_keys(store: Store, tenant: str | None = None) -> Response:
    return _json({"object": "list", "data": [key_json(key) for key in await store.list_keys(tenant)]})


@admin_router.get("/keys/{key_id}")
async def get_key(key_id: str, store: Store) -> Response:
    key = await store.get_key(key_id)
    if key is None:
        raise _no_key(key_id)
    return _json(key_json(key))


@admin_router.patch("/keys/{key_id}")
async def update_key(key_id: str, body: KeyPatch, request: Request, store: Store) -> Response:
    _check_models(request, body.models)
    changes: dict[str, Any] = {}
    if body.name is not None:
        changes["name"] = body.name
    if body.tiers is not None:
        changes["tiers"] = [tier.value for tier in body.tiers]
    if body.limits is not None:
        changes["quotas"] = _quotas(body.limits)
    for field in ("models", "expires_at", "max_concurrent"):
        if field in body.model_fields_set:  # an explicit null: "every model", "never expires", "no cap"
            changes[field] = getattr(body, field)
    try:
        key = await store.update_key(key_id, **changes)
    except KeyStoreNotFound:
        raise _no_key(key_id) from None
    except ValueError as exc:
        raise GatewayError(400, str(exc), code="invalid_value") from None
    _invalidate(request, key_id)
    return _json(key_json(key))


@admin_router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, store: Store) -> Response:
    try:
        key = await store.revoke_key(key_id)
    except KeyStoreNotFound:
        raise _no_key(key_id) from None
    _invalidate(request, key_id)
    return _json(key_json(key))


def _invalidate(request: Request, key_id: str) -> None:
    """This replica forgets the key at once; the others within their cache TTL."""
    authenticator = services(request).authenticator
    if authenticator is not None:
        authenticator.invalidate(key_id)


@admin_router.get("/billing/invoice")
async def billing_invoice(request: Request, store: Store, tenant: str, period: str | None = None) -> Response:
    state = services(request)
    book = state.price_book
    if state.bookkeeper is None or book is None:
        raise GatewayError(
            404, "Billing is not configured on this gateway (pricing.book).", code="billing_disabled"
        )
    start, end = period_bounds(period)
    return _json(invoice_json(await invoice(state.bookkeeper.ledger, tenant, book.currency, start, end)))


@admin_router.get("/billing/export")
async def billing_export(
    request: Request,
    store: Store,
    format: str = "jsonl",
    period: str | None = None,
    tenant: str | None = None,
) -> Response:
    state = services(request)
    if state.bookkeeper is None:
        raise GatewayError(
            404, "Billing is not configured on this gateway (pricing.book).", code="billing_disabled"
        )
    if format not in FORMATS:
        raise GatewayError(
            400, f"format is one of {', '.join(FORMATS)}.", code="invalid_value", param="format"
        )
    start, end = period_bounds(period)
    media_type, _ = FORMATS[format]
    chunks = export(
        state.bookkeeper.ledger, format, tenant, start, end, state.settings.pricing.stripe_customers
    )
    return StreamingResponse(chunks, media_type=media_type)


def _billing(state: Services) -> tuple[Any, str]:
    """The budget keeper and the currency; 404 when this gateway bills nothing (no pricing.book)."""
    book = state.price_book
    if state.budgets is None or book is None:
        raise GatewayError(
            404, "Billing is not configured on this gateway (pricing.book).", code="billing_disabled"
        )
    return state.budgets, book.currency


async def _budgets_json(state: Services, tenant: str, budgets: list[Budget]) -> Response:
    keeper, currency = _billing(state)
    statuses = await keeper.status(tenant, budgets, time.time())
    data = [budget_json(status.budget, currency, status) for status in statuses]
    return _json({"object": "list", "data": data})


async def _set_budget(
    request: Request, store: KeyStore, scope: Scope, subject: str, period: Period, body: BudgetIn
) -> Response:
    state = services(request)
    keeper, currency = _billing(state)
    budget = Budget(scope, subject, period, parse_limit(body.limit))
    try:
        tenant = await store.set_budget(budget)
    except KeyStoreNotFound:
        raise _no_subject(scope, subject) from None
    await _forget(request, store, scope, subject)
    (status,) = await keeper.status(tenant, [budget], time.time())
    return _json(budget_json(budget, currency, status))


async def _delete_budget(
    request: Request, store: KeyStore, scope: Scope, subject: str, period: Period
) -> Response:
    _billing(services(request))
    if not await store.delete_budget(scope, subject, period):
        raise GatewayError(404, f"No {period} budget for the {scope} `{subject}`.", code="budget_not_found")
    await _forget(request, store, scope, subject)
    return _json({"scope": scope, "subject": subject, "period": period, "deleted": True})


async def _forget(request: Request, store: KeyStore, scope: Scope, subject: str) -> None:
    """This replica sees a changed budget at once (the others within their key cache's TTL)."""
    if scope == "key":
        _invalidate(request, subject)
        return
    for key in await store.list_keys(subject):
        _invalidate(request, key.id)


@admin_router.get("/tenants/{tenant_id}/budgets")
async def tenant_budgets(tenant_id: str, request: Request, store: Store) -> Response:
    """The tenant's budgets and its keys', each where it stands in its current window."""
    return await _budgets_json(services(request), tenant_id, await store.list_budgets(tenant_id))


@admin_router.put("/tenants/{tenant_id}/budgets/{period}")
async def set_tenant_budget(
    tenant_id: str, period: Period, body: BudgetIn, request: Request, store: Store
) -> Response:
    return await _set_budget(request, store, "tenant", tenant_id, period, body)


@admin_router.delete("/tenants/{tenant_id}/budgets/{period}")
async def delete_tenant_budget(tenant_id: str, period: Period, request: Request, store: Store) -> Response:
    return await _delete_budget(request, store, "tenant", tenant_id, period)


@admin_router.get("/keys/{key_id}/budgets")
async def key_budgets(key_id: str, request: Request, store: Store) -> Response:
    key = await store.get_key(key_id)
    if key is None:
        raise _no_key(key_id)
    budgets = [b for b in await store.list_budgets(key.tenant_id) if b.scope == "key" and b.subject == key_id]
    return await _budgets_json(services(request), key.tenant_id, budgets)


@admin_router.put("/keys/{key_id}/budgets/{period}")
async def set_key_budget(
    key_id: str, period: Period, body: BudgetIn, request: Request, store: Store
) -> Response:
    return await _set_budget(request, store, "key", key_id, period, body)


@admin_router.delete("/keys/{key_id}/budgets/{period}")
async def delete_key_budget(key_id: str, period: Period, request: Request, store: Store) -> Response:
    return await _delete_budget(request, store, "key", key_id, period)


def _no_subject(scope: Scope, subject: str) -> GatewayError:
    if scope == "key":
        return _no_key(subject)
    return GatewayError(404, f"No tenant `{subject}`.", code="tenant_not_found")


def _no_key(key_id: str) -> GatewayError:
    return GatewayError(404, f"No key `{key_id}`.", code="key_not_found")
