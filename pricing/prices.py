"""Prices: one (tier, model) at one time, and one version of the whole price list."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pricing._exceptions import NotPriced
from pricing.charges import ChargeKind
from pricing.money import MICROS_PER_UNIT, Micros

__all__ = ["ClassRule", "Price", "PriceVersion"]


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
class ClassRule:
    """What a priority class pays: every charge of its requests times `multiplier_ppm` / 1,000,000 (at
    least 1: a class pays for being served first, never less than standard). The difference is one
    `class_surcharge` line, `surcharge(total)`, rounded once, half up, to whole micros."""

    multiplier_ppm: int  # 1.2 -> 1_200_000: integers, so the surcharge is exact

    def surcharge(self, amount: Micros) -> Micros:
        extra = self.multiplier_ppm - MICROS_PER_UNIT
        return (amount * extra + MICROS_PER_UNIT // 2) // MICROS_PER_UNIT

    def most(self, amount: Micros) -> Micros:
        """An upper bound of `amount` with its surcharge (for budget reservations): rounded up."""
        extra = self.multiplier_ppm - MICROS_PER_UNIT
        return amount - (-amount * extra // MICROS_PER_UNIT)


@dataclass(frozen=True, slots=True)
class PriceVersion:
    label: str  # effective_from as the book names it ("2026-01-01"); a charge's `price_version`
    effective_from: datetime  # aware, UTC
    prices: Mapping[str, Mapping[str, Price]]  # tier -> model -> price
    # priority class -> its rule; a class without one (standard, always) pays the prices as they are
    classes: Mapping[str, ClassRule] = field(default_factory=dict)

    def price(self, tier: str, model: str) -> Price | None:
        return self.prices.get(tier, {}).get(model)

    def require(self, tier: str, model: str) -> Price:
        price = self.price(tier, model)
        if price is None:
            raise NotPriced(f"price version {self.label} has no {tier} price for model {model!r}")
        return price

    def models(self) -> set[str]:
        return {model for by_model in self.prices.values() for model in by_model}
