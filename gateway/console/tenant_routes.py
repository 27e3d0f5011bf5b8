"""The tenant's pages: keys (create, revoke, limits), spend by day and tier with the budgets and what is
left, the month's invoice (and its CSV), the latest requests. Every read and write is of the signed-in
tenant: a key id from a form is looked up and refused unless it is that tenant's, like an unknown one."""

from __future__ import annotations

import csv
import io
import time
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.datastructures import FormData
from starlette.responses import Response

from gateway.admin.statements import invoice, period_bounds
from gateway.console.chart import spend_chart
from gateway.console.ledger_views import daily_spend, recent_requests
from gateway.console.page import Visit, visit
from gateway.keys import ApiKey, KeyStore, KeyStoreNotFound
from gateway.limits import Quota
from gateway.refusals import Refusal
from gateway.tiers import Tier
from pricing import Invoice, format_micros

__all__ = ["tenant_router"]

VisitDep = Annotated[Visit, Depends(visit)]
tenant_router = APIRouter(prefix="/console", include_in_schema=False)
TIERS = [tier.value for tier in Tier]
NO_BILLING = "Billing is not configured on this gateway."


def _store(v: Visit) -> KeyStore:
    assert v.state.keys is not None, "a tenant signed in with a key: the key store is there"
    return v.state.keys


async def _keys_page(
    v: Visit, status: int = 200, *, error: str | None = None, secret: str | None = None
) -> Response:
    keys = await _store(v).list_keys(v.tenant)
    tiers = [tier for tier in TIERS if v.key is not None and tier in v.key.tiers]
    return v.render(
        "keys.html", status, title="API keys", keys=keys, tiers=tiers, error=error, secret=secret, me=v.key
    )


@tenant_router.get("/keys")
async def keys_page(v: VisitDep) -> Response:
    return v.refuse("tenant") or await _keys_page(v)


def _limits(fields: FormData, tiers: list[str], ceiling: ApiKey) -> dict[str, Quota]:
    """Each tier's limits from the form, no looser than those of the key signed in with: a key made or
    changed in the console never grants more than the key that made it."""
    quotas = {}
    for tier in tiers:
        given = {}
        for name in ("rpm", "tpm"):
            text = str(fields.get(f"{name}_{tier}", "")).strip()
            try:
                given[name] = int(text) if text else None
            except ValueError:
                raise Refusal(
                    "invalid", f"{tier} {name} must be a whole number.", code="invalid_value"
                ) from None
            cap = getattr(ceiling.quota_for(tier), name)
            if cap is not None and (given[name] is None or given[name] > cap):
                raise Refusal(
                    "invalid",
                    f"{tier} {name} may be at most {cap}, the limit of the key you signed in with.",
                    code="invalid_value",
                )
        try:
            quotas[tier] = Quota(rpm=given["rpm"], tpm=given["tpm"])
        except ValueError as exc:
            raise Refusal("invalid", f"{tier}: {exc}", code="invalid_value") from None
    return {tier: quota for tier, quota in quotas.items() if not quota.unlimited}


@tenant_router.post("/keys")
async def create_key(v: VisitDep) -> Response:
    if (refused := v.refuse("tenant")) is not None:
        return refused
    fields = await v.form()
    if fields is None:
        return v.forbidden()
    assert v.key is not None
    tiers = [tier for tier in fields.getlist("tiers") if isinstance(tier, str)]
    if not tiers or not set(tiers) <= v.key.tiers:
        return await _keys_page(v, 400, error="Choose at least one of the tiers your key may use.")
    try:
        quotas = _limits(fields, tiers, v.key)
        _, secret = await _store(v).create_key(
            v.tenant,
            name=str(fields.get("name", "")).strip()[:100],
            tiers=tiers,
            models=v.key.models,  # no wider than the key signed in with
            quotas=quotas,
            expires_at=v.key.expires_at,  # nor outliving it
            max_concurrent=v.key.max_concurrent,  # nor with more in flight
        )
    except Refusal as refusal:
        return await _keys_page(v, 400, error=refusal.message)
    except ValueError as exc:
        return await _keys_page(v, 400, error=str(exc))
    # shown once, in this answer, never stored (POST-redirect-GET would have to keep it somewhere)
    return await _keys_page(v, 201, secret=str(secret))


async def _own_key(v: Visit, key_id: str) -> ApiKey | None:
    key = await _store(v).get_key(key_id)
    return key if key is not None and key.tenant_id == v.tenant else None


def _forget(v: Visit, key_id: str) -> None:
    if v.state.authenticator is not None:
        v.state.authenticator.invalidate(key_id)  # this worker at once, the others within the cache TTL


@tenant_router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, v: VisitDep) -> Response:
    if (refused := v.refuse("tenant")) is not None:
        return refused
    if await v.form() is None:
        return v.forbidden()
    if await _own_key(v, key_id) is None:  # another tenant's key reads as no key at all
        return await _keys_page(v, 404, error=f"No key {key_id}.")
    try:
        await _store(v).revoke_key(key_id)
    except KeyStoreNotFound:
        return await _keys_page(v, 404, error=f"No key {key_id}.")
    _forget(v, key_id)
    return v.redirect("/console/keys" if key_id != v.session.key else "/console/sign-in")


@tenant_router.post("/keys/{key_id}/limits")
async def key_limits(key_id: str, v: VisitDep) -> Response:
    if (refused := v.refuse("tenant")) is not None:
        return refused
    fields = await v.form()
    if fields is None:
        return v.forbidden()
    key = await _own_key(v, key_id)
    if key is None:
        return await _keys_page(v, 404, error=f"No key {key_id}.")
    assert v.key is not None
    try:
        quotas = _limits(fields, sorted(key.tiers), v.key)
        await _store(v).update_key(key_id, quotas=quotas)
    except Refusal as refusal:
        return await _keys_page(v, 400, error=refusal.message)
    except (ValueError, KeyStoreNotFound) as exc:
        return await _keys_page(v, 400, error=str(exc))
    _forget(v, key_id)
    return v.redirect("/console/keys")


@tenant_router.get("/spend")
async def spend_page(v: VisitDep) -> Response:
    if (refused := v.refuse("tenant")) is not None:
        return refused
    try:
        start, end = period_bounds(v.request.query_params.get("period"))
    except Refusal as refusal:
        return v.render("error.html", 400, title="Spend", message=refusal.message)
    state, book = v.state, v.state.price_book
    if state.database is None or book is None or state.budgets is None:
        return v.render(
            "error.html", 404, title="Spend", message="Billing is not configured on this gateway."
        )
    days = await daily_spend(state.database, v.tenant, start, end)
    statuses = await state.budgets.status(v.tenant, await _store(v).list_budgets(v.tenant), time.time())
    return v.render(
        "spend.html",
        title="Spend and budgets",
        period=f"{start:%Y-%m}",
        currency=book.currency,
        days=days,
        tiers=TIERS,
        chart=spend_chart(days, start, end, TIERS),
        budgets=statuses,
        money=format_micros,
    )


@tenant_router.get("/invoice")
async def invoice_page(v: VisitDep) -> Response:
    if (refused := v.refuse("tenant")) is not None:
        return refused
    bill = await _invoice(v)
    if isinstance(bill, Response):
        return bill
    return v.render(
        "invoice.html", title="Invoice", bill=bill, period=f"{bill.period_start:%Y-%m}", money=format_micros
    )


@tenant_router.get("/invoice.csv")
async def invoice_csv(v: VisitDep) -> Response:
    if (refused := v.refuse("tenant")) is not None:
        return refused
    bill = await _invoice(v)
    if isinstance(bill, Response):
        return bill
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["tenant", "period", "tier", "model", "kind", "quantity", "currency", "amount"])
    month = f"{bill.period_start:%Y-%m}"
    for line in bill.lines:
        writer.writerow(
            [
                bill.tenant,
                month,
                line.tier,
                line.model,
                line.kind,
                line.quantity,
                bill.currency,
                format_micros(line.amount),
            ]
        )
    writer.writerow(
        [bill.tenant, month, "", "", "total", bill.requests, bill.currency, format_micros(bill.total)]
    )
    filename = f"tiergate-invoice-{bill.tenant}-{month}.csv"
    return v.finish(
        Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{filename}"'},
        )
    )


async def _invoice(v: Visit) -> Invoice | Response:
    try:
        start, end = period_bounds(v.request.query_params.get("period"))
    except Refusal as refusal:
        return v.render("error.html", 400, title="Invoice", message=refusal.message)
    state, book = v.state, v.state.price_book
    if state.bookkeeper is None or book is None:
        return v.render(
            "error.html", 404, title="Invoice", message="Billing is not configured on this gateway."
        )
    return await invoice(state.bookkeeper.ledger, v.tenant, book.currency, start, end)


@tenant_router.get("/requests")
async def requests_page(v: VisitDep) -> Response:
    if (refused := v.refuse("tenant")) is not None:
        return refused
    if v.state.database is None or v.state.bookkeeper is None:
        return v.render(
            "error.html", 404, title="Requests", message="Billing is not configured on this gateway."
        )
    rows = await recent_requests(v.state.database, v.tenant)
    return v.render("requests.html", title="Recent requests", rows=rows, money=format_micros)
