"""What a tenant may see of its own bill: `GET /v1/generation?id=` (one request, by its request id or its
reply's `id`) and `GET /v1/usage`
(a period's totals by tier and model). A key sees its own tenant's requests only; another tenant's id is a
404 like an unknown one. Rows reach the ledger from the journal within a fraction of a second."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from gateway.admin.services import services
from gateway.admin.statements import period_bounds
from gateway.http.endpoints import request_id_of_reply
from gateway.http.errors import GatewayError
from gateway.keys import ApiKey
from pricing import Ledger, LedgerRow, format_micros

__all__ = ["usage_router"]


async def _caller(request: Request) -> ApiKey | None:
    return await services(request).admitter.authenticate(request.headers)


async def _ledger(request: Request) -> Ledger:
    bookkeeper = services(request).bookkeeper
    if bookkeeper is None:
        raise GatewayError(
            404, "Billing is not configured on this gateway (pricing.book).", code="billing_disabled"
        )
    return bookkeeper.ledger


Caller = Annotated[ApiKey | None, Depends(_caller)]
LedgerDep = Annotated[Ledger, Depends(_ledger)]
usage_router = APIRouter()


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def generation_json(row: LedgerRow) -> dict[str, Any]:
    record, charge = row.record, row.charge
    first = record.first_token_at
    return {
        "id": record.request_id,
        "model": f"{record.model}:{record.tier}",
        "tier": record.tier,
        "rated_tier": charge.rated_tier,
        "endpoint": record.endpoint,
        "streamed": record.streamed,
        "outcome": record.outcome,
        "estimated": record.estimated,
        "created_at": record.started_at.isoformat(),
        "latency_ms": round((record.ended_at - record.started_at).total_seconds() * 1000, 1),
        "first_token_ms": round((first - record.started_at).total_seconds() * 1000, 1) if first else None,
        "tokens_prompt": record.prompt_tokens,
        "tokens_cached": record.cached_tokens,
        "tokens_completion": record.completion_tokens,
        "tokens_reasoning": record.reasoning_tokens,
        "reasoning_depth": record.depth.to_dict(),
        "currency": charge.currency,
        "total_cost": orjson.Fragment(format_micros(charge.total).encode()),
        "cost_micros": charge.total,
        "lines": [line.to_dict() for line in charge.lines],
        "price_version": charge.price_version,
        "cascade": record.cascade.to_dict() if record.cascade is not None else None,
    }


@usage_router.get("/v1/generation")
async def generation(caller: Caller, ledger: LedgerDep, given: Annotated[str, Query(alias="id")]) -> Response:
    """`id`: the request id (`x-tiergate-request-id`) or the reply's `id`, which is made of it."""
    row = await ledger.get(request_id_of_reply(given))
    if row is None or (caller is not None and row.record.tenant != caller.tenant_id):
        raise GatewayError(404, f"No generation `{given}`.", code="generation_not_found", param="id")
    return _json({"data": generation_json(row)})


@usage_router.get("/v1/usage")
async def usage(caller: Caller, ledger: LedgerDep, period: str | None = None) -> Response:
    start, end = period_bounds(period)
    tenant = caller.tenant_id if caller is not None else None  # without keys (local use): everyone
    totals = await ledger.totals(tenant, start, end)
    return _json(
        {
            "object": "usage",
            "tenant": tenant,
            "period": {"start": start.isoformat(), "end": end.isoformat()},
            "data": [
                {
                    "tier": total.tier,
                    "rated_tier": total.rated_tier,
                    "model": total.model,
                    "requests": total.requests,
                    "tokens_prompt": total.prompt_tokens,
                    "tokens_cached": total.cached_tokens,
                    "tokens_completion": total.completion_tokens,
                    "tokens_reasoning": total.reasoning_tokens,
                    "currency": total.currency,
                    "cost": orjson.Fragment(format_micros(total.total).encode()),
                    "cost_micros": total.total,
                }
                for total in totals
            ],
        }
    )
