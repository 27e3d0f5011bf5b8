"""Prices: one (tier, model) at one time, and one version of the whole price list."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pricing._exceptions import NotPriced
from pricing.charges import ChargeKind
from pricing.money import Micros

__all__ = ["Price", "PriceVersion"]


@dataclass(frozen=True, slots=True)
class Price:
    """One tier and model. Token prices in micros per 1M tokens, fees in micros per request."""

    input: Micros
    cached_input: Micros
    output: Micros
    reasoning: Micros  # reasoning tokens are output tokens; a separate line only makes them visible
    request: Micros = 0
    depth_premium: Micros = 0  # deliberate tier only; charged only when the promised depth was delivered

    def unit(self, kind: ChargeKind) -> Micros:
        return int(getattr(self, kind))


@dataclass(frozen=True, slots=True)
class PriceVersion:
    label: str  # effective_from as the book names it ("2026-01-01"); a charge's `price_version`
    effective_from: datetime  # aware, UTC
    prices: Mapping[str, Mapping[str, Price]]  # tier -> model -> price

    def price(self, tier: str, model: str) -> Price | None:
        return self.prices.get(tier, {}).get(model)

    def require(self, tier: str, model: str) -> Price:
        price = self.price(tier, model)
        if price is None:
            raise NotPriced(f"price version {self.label} has no {tier} price for model {model!r}")
        return price

    def models(self) -> set[str]:
        return {model for by_model in self.prices.values() for model in by_model}
