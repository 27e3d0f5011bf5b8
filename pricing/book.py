"""The versioned price book: what each (tier, model) costs, and since when.

Each version is a complete snapshot of prices, in force from its `effective_from` until the next version's.
A request is priced by the version in force at its start, so a price change never reprices requests already
served, and replaying an old journal gives the same bills. The YAML format and its validation live in
`pricing._book_parse`; validation happens when the book is loaded, never when the first bill is due.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pricing._book_parse import load_yaml, parse_versions
from pricing._exceptions import CoverageError, NotPriced, PriceBookError
from pricing.prices import Price, PriceVersion
from pricing.records import TIERS

__all__ = ["PriceBook", "load_price_book"]


@dataclass(frozen=True, slots=True)
class PriceBook:
    currency: str  # ISO 4217, e.g. "USD"; every amount is in its micro-units
    versions: tuple[PriceVersion, ...]  # by effective_from, strictly increasing, at least one
    _starts: tuple[datetime, ...] = field(init=False, repr=False, compare=False)  # for bisect, per request

    def __post_init__(self) -> None:
        # from_mapping has said why in detail; this guards books built directly (tests, tools)
        starts = tuple(version.effective_from for version in self.versions)
        if not starts or any(later <= earlier for earlier, later in itertools.pairwise(starts)):
            raise PriceBookError("a price book needs versions in strictly increasing effective_from order")
        object.__setattr__(self, "_starts", starts)

    @classmethod
    def from_mapping(cls, data: object) -> PriceBook:
        """Validate a decoded price book (see docs/pricing.md). PriceBookError names the first bad key."""
        currency, versions = parse_versions(data)
        return cls(currency, versions)

    def version_at(self, at: datetime) -> PriceVersion:
        """The version in force at `at`: the latest one whose effective_from is <= `at`."""
        if at.utcoffset() is None:
            raise ValueError(f"naive datetime {at!r}: price versions are chosen by an aware time")
        index = bisect.bisect_right(self._starts, at) - 1
        if index < 0:
            raise NotPriced(
                f"no price version in force at {at.isoformat()}: the first is {self.versions[0].label}"
            )
        return self.versions[index]

    def price(self, tier: str, model: str, at: datetime) -> tuple[PriceVersion, Price]:
        version = self.version_at(at)
        return version, version.require(tier, model)

    def check_coverage(self, offers: Mapping[str, Collection[str]], *, now: datetime | None = None) -> None:
        """Raise CoverageError listing every problem between this book and what the gateway offers.

        `offers` maps each offered model id to the tiers it is offered in. Checked are the versions that can
        still be in force: the one in force at `now` (default: the current time) and every later one. In
        each, every offered (tier, model) must have a price (else a gap in coverage), and every priced model
        must be offered (else an unknown model, most likely a typo). A model may be priced in a tier it is
        not offered in: a fast price for a deliberate-only model is what a missed depth floor is rated at.
        Older versions are history: they only price requests already served and are not checked.
        """
        now = datetime.now(UTC) if now is None else now
        if now.utcoffset() is None:
            raise ValueError(f"naive datetime {now!r}: coverage is checked at an aware time")
        problems: list[str] = []
        for model, tiers in sorted(offers.items()):
            problems.extend(
                f"{model}: unknown tier {tier!r} (tiers: {', '.join(TIERS)})"
                for tier in tiers
                if tier not in TIERS
            )
        first = bisect.bisect_right(self._starts, now) - 1
        if first < 0:
            problems.append(
                f"no price version in force at {now.isoformat()}: the first starts {self.versions[0].label}"
            )
            first = 0
        for version in self.versions[first:]:
            where = f"price version {version.label}"
            for model, tiers in sorted(offers.items()):
                problems.extend(
                    f"{where}: gap in coverage: {tier} {model} is offered but not priced"
                    for tier in sorted(tiers, key=_tier_order)
                    if tier in TIERS and version.price(tier, model) is None
                )
            problems.extend(
                f"{where}: unknown model {model!r} is priced but not offered"
                for model in sorted(version.models() - set(offers))
            )
        if problems:
            raise CoverageError(tuple(problems))


def _tier_order(tier: str) -> int:
    return TIERS.index(tier) if tier in TIERS else len(TIERS)


def load_price_book(path: str | Path) -> PriceBook:
    """Read and validate a YAML price book. PriceBookError for a bad file, with the path and the bad key."""
    path = Path(path)
    data = load_yaml(path)
    try:
        return PriceBook.from_mapping(data)
    except PriceBookError as exc:
        raise PriceBookError(f"{path}: {exc}") from None
