"""An invoice: one tenant's ledger rows over a period, summed per tier, model and charge kind.

Built incrementally (`InvoiceBuilder.add`, one row at a time, memory bounded by the number of distinct
(tier, model, kind) lines, not by the number of rows), so a month of traffic streams through it. Amounts are
sums of the rows' integer line amounts: no rounding happens here, so the invoice total is exactly the sum of
the charges. Lines are grouped by the tier whose prices applied (`Charge.rated_tier`): a deliberate request
whose depth floor was missed is billed, and listed, at fast prices; `depth_floor_missed` counts those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from pricing.charges import KINDS, ChargeKind
from pricing.money import Micros
from pricing.records import TIERS, LedgerRow

__all__ = ["Invoice", "InvoiceBuilder", "InvoiceLine", "build_invoice"]


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    tier: str  # the rated tier
    model: str
    kind: ChargeKind
    quantity: int  # tokens, or requests for fee lines
    amount: Micros


@dataclass(frozen=True, slots=True)
class Invoice:
    tenant: str | None
    currency: str
    period_start: datetime  # inclusive; a row belongs to the period its request started in
    period_end: datetime  # exclusive
    lines: tuple[InvoiceLine, ...]  # by tier (fast, deliberate), model, then kind in charge-line order
    subtotals: Mapping[str, Micros]  # per rated tier, in tier order, only tiers with rows
    total: Micros
    requests: int
    depth_floor_missed: int  # deliberate requests whose promised depth was not delivered


def _line_order(key: tuple[str, str, ChargeKind]) -> tuple[int, str, int]:
    tier, model, kind = key
    return (TIERS.index(tier) if tier in TIERS else len(TIERS), model, KINDS.index(kind))


class InvoiceBuilder:
    """Adds rows one at a time; refuses a row of another tenant, currency or period (a query bug upstream)."""

    def __init__(
        self, tenant: str | None, currency: str, period_start: datetime, period_end: datetime
    ) -> None:
        if period_start.utcoffset() is None or period_end.utcoffset() is None:
            raise ValueError("an invoice period is bounded by timezone-aware datetimes")
        if period_end <= period_start:
            raise ValueError(f"empty invoice period: {period_start.isoformat()} to {period_end.isoformat()}")
        self.tenant = tenant
        self.currency = currency
        self.period_start = period_start
        self.period_end = period_end
        self._sums: dict[tuple[str, str, ChargeKind], list[int]] = {}  # key -> [quantity, amount]
        self._total = 0
        self._requests = 0
        self._missed = 0

    def add(self, row: LedgerRow) -> None:
        record, charge = row.record, row.charge
        if record.tenant != self.tenant:
            raise ValueError(
                f"{record.request_id}: tenant {record.tenant!r} on an invoice for {self.tenant!r}"
            )
        if charge.currency != self.currency:
            raise ValueError(f"{record.request_id}: charged in {charge.currency}, invoice in {self.currency}")
        if not self.period_start <= record.started_at < self.period_end:
            raise ValueError(
                f"{record.request_id}: started {record.started_at.isoformat()}, outside the period"
            )
        for line in charge.lines:
            sums = self._sums.setdefault((charge.rated_tier, record.model, line.kind), [0, 0])
            sums[0] += line.quantity
            sums[1] += line.amount
        self._total += charge.total
        self._requests += 1
        if record.tier == "deliberate" and record.depth.floor_met is False:
            self._missed += 1

    def build(self) -> Invoice:
        keys = sorted(self._sums, key=_line_order)
        lines = tuple(InvoiceLine(*key, *self._sums[key]) for key in keys)
        subtotals: dict[str, Micros] = {}
        for line in lines:
            subtotals[line.tier] = subtotals.get(line.tier, 0) + line.amount
        return Invoice(
            tenant=self.tenant,
            currency=self.currency,
            period_start=self.period_start,
            period_end=self.period_end,
            lines=lines,
            subtotals=MappingProxyType(subtotals),
            total=self._total,
            requests=self._requests,
            depth_floor_missed=self._missed,
        )


def build_invoice(
    rows: Iterable[LedgerRow], tenant: str | None, currency: str, period_start: datetime, period_end: datetime
) -> Invoice:
    builder = InvoiceBuilder(tenant, currency, period_start, period_end)
    for row in rows:
        builder.add(row)
    return builder.build()
