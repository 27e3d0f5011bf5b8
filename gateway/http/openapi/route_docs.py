"""What FastAPI cannot know of the FastAPI routes (models, usage, admin, probes): who may call each, the
statuses each really answers, the shape of what it returns (each returns a raw `Response`). One entry per
route; tests/gateway/http/test_openapi.py fails on a FastAPI route without one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.http.openapi.schema import (
    Json,
    array,
    boolean,
    enum,
    integer,
    nullable,
    obj,
    open_object,
    ref,
    string,
)
from gateway.http.openapi.statuses import KEY_401, KEY_STORE_503

__all__ = ["ROUTE_DOCS", "ROUTE_SCHEMAS", "RouteDoc", "Security"]

Security = Literal["apiKey", "adminToken", "none"]


@dataclass(frozen=True, slots=True)
class RouteDoc:
    errors: Mapping[int, str]  # status -> when, with its codes (a 500 is added to every route)
    body: str | None = None  # the component schema of the success's JSON body
    ok: int = 200
    security: Security = "apiKey"
    tag: str = "models"
    ok_media: Mapping[str, Json] = field(default_factory=dict)  # other media types of the success
    same_body: Mapping[int, str] = field(default_factory=dict)  # other statuses answered with the same body


_DB = "The database cannot be reached (`database_unavailable`); `retry-after`."
_BILLING = "Billing is not configured on this gateway: no `pricing.book` (`billing_disabled`)."
_PERIOD = "`period` is not a month `YYYY-MM` from 0001-01 to 9999-11 (`invalid_value`)."
_ADMIN = {
    401: "No admin token, or a wrong one (`invalid_admin_token`).",
    403: "An API key instead of an admin token (`admin_token_required`), or the admin API is disabled: no"
    " `auth.admin_tokens` (`admin_disabled`).",
    503: _DB,
}
_BODY = "The body or a parameter is missing or wrong (`invalid_value`, `param` names it)."
_NO_KEY = "No such key (`key_not_found`)."
_BUDGETS_503 = _DB + " Budgets cannot be read: Redis is down (`budget_unavailable`)."


def _admin(errors: Mapping[int, str], body: str | None = None, ok: int = 200) -> RouteDoc:
    return RouteDoc({**_ADMIN, **errors}, body, ok, "adminToken", "admin")


def _usage(errors: Mapping[int, str], body: str) -> RouteDoc:
    return RouteDoc({401: KEY_401, 404: _BILLING, 503: f"{_DB} {KEY_STORE_503}", **errors}, body, tag="usage")


def _budget_set(subject_404: str) -> RouteDoc:
    return _admin({400: _BODY, 404: f"{subject_404} {_BILLING}", 503: _BUDGETS_503}, "Budget")


def _budget_delete(subject: str) -> RouteDoc:
    text = f"No budget of that period for the {subject} (`budget_not_found`). {_BILLING}"
    return _admin({400: "`period` is not `daily`, `monthly` or `total` (`invalid_value`).", 404: text})


_EXPORTS = {
    media: {"schema": string()}
    for media in ("text/csv; charset=utf-8", "application/x-ndjson", "application/cloudevents-batch+json")
}

ROUTE_DOCS: Mapping[tuple[str, str], RouteDoc] = {
    ("GET", "/v1/models"): RouteDoc({401: KEY_401, 503: KEY_STORE_503}, "ModelList"),
    ("GET", "/v1/models/{model_id}"): RouteDoc(
        {
            401: KEY_401,
            404: "Not an id a request may name, or not one this key may use (`model_not_found`).",
            503: KEY_STORE_503,
        },
        "Model",
    ),
    ("GET", "/healthz"): RouteDoc({}, "Health", security="none", tag="probes"),
    ("GET", "/readyz"): RouteDoc(
        {},
        "Readiness",
        security="none",
        tag="probes",
        same_body={503: "Not ready: a pool has no healthy replica (`status: not_ready`)."},
    ),
    ("GET", "/v1/generation"): _usage(
        {
            400: "No `id` (`invalid_value`).",
            404: f"No such request of this tenant (`generation_not_found`). {_BILLING}",
        },
        "Generation",
    ),
    ("GET", "/v1/usage"): _usage({400: _PERIOD}, "UsageTotals"),
    ("POST", "/admin/tenants"): _admin(
        {400: _BODY, 409: "The tenant exists already (`tenant_exists`)."}, "Tenant", ok=201
    ),
    ("GET", "/admin/tenants"): _admin({}, "TenantList"),
    ("GET", "/admin/tenants/{tenant_id}"): _admin({404: "No such tenant (`tenant_not_found`)."}, "Tenant"),
    ("PATCH", "/admin/tenants/{tenant_id}"): _admin(
        {400: _BODY, 404: "No such tenant (`tenant_not_found`)."}, "Tenant"
    ),
    ("POST", "/admin/keys"): _admin(
        {400: _BODY + " Unknown models (`model_not_found`).", 404: "No such tenant (`tenant_not_found`)."},
        "KeyCreated",
        ok=201,
    ),
    ("GET", "/admin/keys"): _admin({}, "KeyList"),
    ("GET", "/admin/keys/{key_id}"): _admin({404: _NO_KEY}, "Key"),
    ("PATCH", "/admin/keys/{key_id}"): _admin(
        {400: _BODY + " Unknown models (`model_not_found`).", 404: _NO_KEY}, "Key"
    ),
    ("POST", "/admin/keys/{key_id}/revoke"): _admin({404: _NO_KEY}, "Key"),
    ("GET", "/admin/billing/invoice"): _admin({400: f"No `tenant`, or {_PERIOD}", 404: _BILLING}, "Invoice"),
    ("GET", "/admin/billing/export"): RouteDoc(
        {**_ADMIN, 400: f"`format` is not csv, jsonl or cloudevents, or {_PERIOD}", 404: _BILLING},
        security="adminToken",
        tag="admin",
        ok_media=_EXPORTS,
    ),
    ("GET", "/admin/tenants/{tenant_id}/budgets"): _admin({404: _BILLING, 503: _BUDGETS_503}, "BudgetList"),
    ("PUT", "/admin/tenants/{tenant_id}/budgets/{period}"): _budget_set(
        "No such tenant (`tenant_not_found`)."
    ),
    ("DELETE", "/admin/tenants/{tenant_id}/budgets/{period}"): _budget_delete("tenant"),
    ("GET", "/admin/keys/{key_id}/budgets"): _admin(
        {404: f"{_NO_KEY} {_BILLING}", 503: _BUDGETS_503}, "BudgetList"
    ),
    ("PUT", "/admin/keys/{key_id}/budgets/{period}"): _budget_set(_NO_KEY),
    ("DELETE", "/admin/keys/{key_id}/budgets/{period}"): _budget_delete("key"),
}

_MODEL = obj(
    {
        "id": string("`qwen3-8b:fast`, `qwen3-8b:auto`, or the bare `qwen3-8b`."),
        "object": enum(("model",)),
        "created": integer(),
        "owned_by": string(),
        "root": string("The model without its tier."),
        "tier": enum(("fast", "deliberate", "auto")),
        "tiers": array(string(), "The tiers the id may lead to (`:auto` and the bare id)."),
        "default_tier": boolean(),
        "max_model_len": integer(),
        "max_output_tokens": integer(),
    },
    required=("id", "object", "created", "owned_by", "root", "tier"),
    extra=True,
)
_TOKENS = {
    "tokens_prompt": integer(),
    "tokens_cached": integer(),
    "tokens_completion": integer(),
    "tokens_reasoning": integer(),
    "currency": string(),
}
_KEY = obj(
    {
        "id": string(),
        "key": string("The key, masked (the secret is shown once, when created)."),
        "tenant": string(),
        "name": string(),
        "tiers": array(enum(("fast", "deliberate"))),
        "models": nullable(array(string())),
        "limits": obj({}, extra=True, description="Per tier: `{rpm, tpm}`."),
        "expires_at": nullable(string(format="date-time")),
        "created_at": string(format="date-time"),
        "last_used_at": nullable(string(format="date-time")),
        "revoked": boolean(),
        "max_concurrent": nullable(integer("Its requests in flight at once, per worker; null: no cap.")),
        "priority_class": enum(("standard", "premium"), "Its tenant's."),
    },
    extra=True,
)
_BUDGET = obj(
    {
        "scope": enum(("tenant", "key")),
        "subject": string(),
        "period": enum(("daily", "monthly", "total")),
        "currency": string(),
        "limit": string("Currency units, exact decimal text."),
        "limit_micros": integer(),
        "window": open_object("The current window: `{label, start, end}`."),
        "spent_micros": integer(),
        "reserved_micros": integer(),
        "remaining_micros": integer(),
    },
    extra=True,
    description="A budget, and where it stands in its current window (also `spent`, `reserved`,"
    " `remaining`).",
)


def _list(item: str) -> Json:
    return obj({"object": enum(("list",)), "data": array(ref(item))}, required=("object", "data"))


ROUTE_SCHEMAS: Mapping[str, Json] = {
    "Model": _MODEL,
    "ModelList": _list("Model"),
    "Health": obj({"status": enum(("ok",))}, required=("status",)),
    "Readiness": obj(
        {
            "status": enum(("ready", "not_ready")),
            "pools": obj({}, extra=True, description="Per pool: `{ready, replicas: [{url, healthy, ...}]}`."),
        },
        required=("status", "pools"),
        description="200 when every pool has a healthy replica; 503 (this same body) when one has none.",
    ),
    "Generation": obj(
        {
            "data": open_object(
                "The request's ledger row: tier, tokens, `reasoning_depth`, `total_cost`, lines..."
            )
        },
        required=("data",),
    ),
    "UsageTotals": obj(
        {
            "object": enum(("usage",)),
            "tenant": nullable(string()),
            "period": obj({"start": string(format="date-time"), "end": string(format="date-time")}),
            "data": array(
                obj(
                    {
                        "tier": string(),
                        "rated_tier": string(),
                        "model": string(),
                        "requests": integer(),
                        **_TOKENS,
                        "cost": string(),
                        "cost_micros": integer(),
                    },
                    extra=True,
                )
            ),
        },
        required=("object", "data"),
    ),
    "Tenant": obj(
        {
            "id": string(),
            "name": nullable(string()),
            "priority_class": enum(
                ("standard", "premium"), "Premium: served first, priced by the class rule."
            ),
            "created_at": string(format="date-time"),
        }
    ),
    "TenantList": _list("Tenant"),
    "Key": _KEY,
    "KeyCreated": {
        "allOf": [ref("Key"), obj({"secret": string("The key's secret: shown this once.")}, extra=True)]
    },
    "KeyList": _list("Key"),
    "Invoice": open_object("A tenant's invoice for the month (docs/pricing.md)."),
    "Budget": _BUDGET,
    "BudgetList": _list("Budget"),
}
