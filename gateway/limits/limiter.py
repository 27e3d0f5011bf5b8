"""The one interface the gateway holds a limiter by, and the one error a limiter raises."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from gateway.limits.admission import Admission, Reservation
from gateway.limits.quota import Quota

__all__ = ["LimiterUnavailable", "RateLimiter"]


class LimiterUnavailable(Exception):
    """The shared limiter's store could not be reached, and the limiter was told not to fail open."""


class RateLimiter(Protocol):
    # True when its calls go over the network (Redis): admission then asks it and the budgets side by side,
    # one round trip's wait for both (gateway.inference.admission); an in-process limiter never awaits
    remote: bool

    async def admit(self, subject: str, tier: str, quota: Quota, tokens: int) -> Admission:
        """Admit one request estimated at `tokens` (prompt estimate + max output tokens), or refuse it.

        Admitted only if both its RPM and TPM checks pass; then both are consumed together, and a
        refusal consumes neither."""
        ...

    def settle(self, reservation: Reservation, used_tokens: int) -> Awaitable[None] | None:
        """Square a reservation with the tokens really used: refund or charge the difference.
        `used_tokens=0` releases it entirely (the request failed). Called as a request ends, so it never
        raises: applied at once (None), or sent with the others settled meanwhile, as soon as the loop is
        free, and then the awaitable returned is done (the request awaits it before its response ends, so
        that its client's next request finds its refund; never longer than one bounded Redis call)."""
        ...

    async def flush(self) -> None:
        """Send the settlements still waiting to go out (nothing to do for an in-process limiter)."""
        ...

    async def aclose(self) -> None: ...
