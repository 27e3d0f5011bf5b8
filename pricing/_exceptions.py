"""Every error `pricing` raises on purpose, in one tree:

    PricingError
    ├── PriceBookError (ValueError)   an invalid price book; raised when it is loaded, never at billing time
    │   └── CoverageError             the book and the gateway's offers disagree (a gap, an unknown model)
    └── NotPriced (LookupError)       no price in force for a request's tier, model and start time

Records and charges that break their own invariants raise plain `ValueError` from their constructors: those
are programming errors in the caller, not conditions to handle.
"""

from __future__ import annotations

__all__ = ["CoverageError", "NotPriced", "PriceBookError", "PricingError"]


class PricingError(Exception):
    """Base of every error pricing raises on purpose."""


class PriceBookError(PricingError, ValueError):
    """The price book is invalid. The message names the bad key: `versions[0].prices.fast.m.output: ...`."""


class CoverageError(PriceBookError):
    """Offered (tier, model) pairs without a price, or priced models nobody offers. `problems` lists each."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        self.problems = problems
        super().__init__("price book does not match the offered models:\n  " + "\n  ".join(problems))


class NotPriced(PricingError, LookupError):
    """No price version in force at that time, or that version has no price for the tier and model."""
