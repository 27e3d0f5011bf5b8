"""What the key store holds: tenants and their API keys (never a key's secret)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from gateway.budgets.budget import Budget
from gateway.limits.quota import Quota

__all__ = ["ApiKey", "Tenant"]


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: datetime
    # its requests' priority class (pricing.PRIORITY_CLASSES): premium waits ahead of standard in a tier's
    # queue, is scheduled ahead by engines that take a priority, and is priced by the price book's class rule
    priority_class: str = "standard"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's grants. Timestamps are aware UTC datetimes; the secret is not here, only its id."""

    id: str
    tenant_id: str
    name: str
    tiers: frozenset[str]
    models: frozenset[str] | None  # None: every model
    quotas: Mapping[str, Quota] = field(hash=False)  # per tier; a tier without an entry is unlimited
    expires_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool
    # the budgets that apply to its requests, its own and its tenant's (filled in when it authenticates)
    budgets: tuple[Budget, ...] = ()
    max_concurrent: int | None = None  # its requests in flight at once, per worker; None: no cap
    priority_class: str = "standard"  # its tenant's, read with it

    @property
    def masked(self) -> str:
        return f"tg-{self.id}-****"

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    def quota_for(self, tier: str) -> Quota:
        return self.quotas.get(tier) or Quota()
