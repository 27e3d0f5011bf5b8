"""The admin API's records as JSON: tenants, keys (never their secrets), budgets and where they stand - one
shape for the HTTP routes and the CLI's local backend alike."""

from __future__ import annotations

from typing import Any

from gateway.budgets import Budget, BudgetStatus
from gateway.keys import ApiKey, Tenant
from gateway.refusals import Refusal
from pricing import format_micros, parse_money

__all__ = ["budget_json", "key_json", "parse_limit", "tenant_json"]


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "name": tenant.name,
        "priority_class": tenant.priority_class,
        "created_at": tenant.created_at.isoformat(),
    }


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "key": key.masked,
        "tenant": key.tenant_id,
        "name": key.name,
        "tiers": sorted(key.tiers),
        "models": sorted(key.models) if key.models is not None else None,
        "limits": {tier: {"rpm": quota.rpm, "tpm": quota.tpm} for tier, quota in sorted(key.quotas.items())},
        "max_concurrent": key.max_concurrent,
        "priority_class": key.priority_class,  # its tenant's
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked": key.revoked,
    }


def budget_json(budget: Budget, currency: str, status: BudgetStatus | None) -> dict[str, Any]:
    """A budget, and where it stands in its current window when `status` is given."""
    body: dict[str, Any] = {
        "scope": budget.scope,
        "subject": budget.subject,
        "period": budget.period,
        "currency": currency,
        "limit": format_micros(budget.limit),
        "limit_micros": budget.limit,
    }
    if status is not None:
        window = status.window
        body["window"] = {
            "label": window.label,
            "start": window.start.isoformat(),
            "end": window.end.isoformat() if window.end is not None else None,
        }
        for name, amount in (
            ("spent", status.spent),
            ("reserved", status.reserved),
            ("remaining", status.remaining),
        ):
            body[name] = format_micros(amount)
            body[f"{name}_micros"] = amount
    return body


def parse_limit(value: object) -> int:
    """A budget's limit in micros from currency units; a Refusal when it is not an amount."""
    try:
        return parse_money(value)
    except ValueError as exc:
        raise Refusal("invalid", f"limit: {exc}", code="invalid_value", param="limit") from None
