"""Budgets in Redis when the gateway's own loop is saturated: its lag is not Redis's outage. With
`failure_mode: closed` nothing is refused for it, no settlement is lost, and the counter equals the ledger.

The lag is made for real: callbacks that block the loop (time.sleep) while Redis calls are on their way."""

from __future__ import annotations

import asyncio
import time

from engines import LoopLag
from gateway.budgets import BudgetHold, BudgetRefusal, BudgetUnavailable, RedisBudgets
from tests.gateway.budgets.test_redis import AT, PATIENT_S, FakeLedger, spend, tenant_daily

TIMEOUT_S = 0.5  # redis.timeout_s: every loop stall below is several times longer
STALL_S = 2.0
REQUESTS = 40


def stall() -> None:
    time.sleep(STALL_S)


async def keepers(
    redis_url: str, redis_prefix: str, ledger: FakeLedger, lag: LoopLag | None
) -> tuple[RedisBudgets, RedisBudgets]:
    """A gateway's keeper failing closed, and an observer that is never in a hurry."""
    keeper = RedisBudgets(
        redis_url, ledger, prefix=redis_prefix, fail_open=False, timeout_s=TIMEOUT_S, lag=lag
    )
    observer = RedisBudgets(redis_url, ledger, prefix=redis_prefix, timeout_s=PATIENT_S)
    await observer.reserve("acme", [tenant_daily(10**12)], 0, AT)  # seeded, however busy the machine
    return keeper, observer


async def reserve_all(keeper: RedisBudgets) -> list[BudgetHold | BudgetRefusal | BaseException]:
    """REQUESTS reservations at once, while the loop is stuck (as a saturated gateway's is)."""
    calls = [
        asyncio.create_task(keeper.reserve("acme", [tenant_daily(10**12)], 500, AT)) for _ in range(REQUESTS)
    ]
    asyncio.get_running_loop().call_soon(stall)  # once each call has started
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def test_without_the_lag_a_stuck_loop_fails_closed_for_no_fault_of_redis(
    redis_url: str, redis_prefix: str
) -> None:
    keeper, observer = await keepers(redis_url, redis_prefix, FakeLedger(), None)
    try:
        answers = await reserve_all(keeper)
        assert any(isinstance(answer, BudgetUnavailable) for answer in answers)  # issue 19's 503s
    finally:
        await keeper.aclose()
        await observer.aclose()


async def test_a_stuck_loop_refuses_nothing_and_every_settlement_lands(
    redis_url: str, redis_prefix: str, lag: LoopLag
) -> None:
    budget = tenant_daily(10**12)
    ledger = 0  # what the ledger would hold: the sum of the charges settled
    keeper, observer = await keepers(redis_url, redis_prefix, FakeLedger(), lag)
    try:
        answers = await reserve_all(keeper)
        holds = [answer for answer in answers if isinstance(answer, BudgetHold)]
        assert len(holds) == REQUESTS, answers  # none failed closed
        assert all(hold.counters for hold in holds)  # each really held in Redis
        landed = []
        for amount, hold in enumerate(holds, start=1):
            ledger += amount
            done = keeper.settle(spend(amount, hold))
            if done is not None:
                landed.append(done)
        asyncio.get_running_loop().call_soon(stall)  # the settlements are on their way: the loop sticks
        await asyncio.gather(*landed)
        [status] = await observer.status("acme", [budget], AT)
        assert (status.spent, status.reserved) == (ledger, 0)  # counter == ledger, no hold left
        assert keeper.failures == 0
    finally:
        await keeper.aclose()
        await observer.aclose()
