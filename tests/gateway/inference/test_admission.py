"""Admission with the limits and the budgets both remote: what a request that goes no further leaves behind.

The paths through HTTP (a refusal by either, by both) are in tests/gateway/budgets/test_http.py, against real
Redis; here, with two small stand-ins whose answers the test releases, the one path HTTP cannot time: a
request cancelled (its client gone) while the limiter has not answered and the budgets' hold is on its way.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gateway.budgets import Budget, BudgetHold, BudgetRefusal, Spend
from gateway.inference.admission import Admitter, TokenEstimate
from gateway.inference.catalog import Offer
from gateway.keys import ApiKey
from gateway.limits import Admission, Quota, Reservation
from gateway.tiers import Tier
from tests.pricing.factories import make_book

AT = datetime(2030, 1, 15, tzinfo=UTC).timestamp()
OFFER = Offer("qwen3-8b", Tier.FAST, "fast", "Qwen/Qwen3-8B", None, "tiergate")
BUDGET = Budget("tenant", "acme", "daily", 5_000_000)
KEY = ApiKey(
    id="k1",
    tenant_id="acme",
    name="app",
    tiers=frozenset({"fast"}),
    models=None,
    quotas={"fast": Quota(rpm=60)},
    expires_at=None,
    created_at=datetime(2030, 1, 1, tzinfo=UTC),
    last_used_at=None,
    revoked=False,
    budgets=(BUDGET,),
)


class SlowLimiter:
    """A remote limiter that has not answered yet."""

    remote = True

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def admit(self, subject: str, tier: str, quota: Quota, tokens: int) -> Admission:
        self.asked.set()
        await asyncio.Event().wait()  # never answers: the request is cancelled meanwhile
        raise AssertionError("unreachable")

    def settle(self, reservation: Reservation, used_tokens: int) -> None:
        raise AssertionError("nothing was admitted, so nothing is settled")

    async def flush(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class HeldBudgets:
    """Remote budgets whose hold arrives when the test says."""

    remote = True

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.settled: list[Spend] = []
        self.released = asyncio.Event()

    async def reserve(
        self, tenant: str, budgets: object, amount: int, at: float
    ) -> BudgetHold | BudgetRefusal:
        await self.answer.wait()
        return BudgetHold("h1", tenant, ("tenant:acme:daily:2030-01-15",), amount)

    def settle(self, spend: Spend) -> None:
        self.settled.append(spend)
        self.released.set()


async def test_a_request_cancelled_before_the_limiter_answers_releases_the_hold_that_comes_after() -> None:
    limiter, budgets = SlowLimiter(), HeldBudgets()
    admitter = Admitter(None, limiter, budgets, make_book())  # type: ignore[arg-type]
    admitting = asyncio.create_task(admitter.admit_and_reserve(KEY, OFFER, TokenEstimate(10, 100, 1), AT))
    await limiter.asked.wait()
    admitting.cancel()
    await asyncio.wait([admitting])
    assert admitting.cancelled()
    assert budgets.settled == []  # the reservation has not answered: nothing to release yet
    budgets.answer.set()
    async with asyncio.timeout(10):
        await budgets.released.wait()
    [spend] = budgets.settled
    assert spend.amount == 0 and spend.hold is not None and spend.hold.id == "h1"
    assert (spend.tenant, spend.key_id, spend.started_at) == ("acme", "k1", AT)
