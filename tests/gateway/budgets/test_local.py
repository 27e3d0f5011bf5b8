"""Budget windows and the in-process budget keeper."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from gateway.budgets import (
    Budget,
    BudgetHold,
    BudgetRefusal,
    Calendar,
    LocalBudgets,
    Spend,
    Window,
    window_of,
)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


NOW = at("2026-11-28T13:00:00")


def test_windows_are_utc_days_and_months() -> None:
    day = window_of("daily", at("2026-11-28T23:59:59.999"))
    assert (day.label, day.start, day.end) == (
        "2026-11-28",
        datetime(2026, 11, 28, tzinfo=UTC),
        datetime(2026, 11, 29, tzinfo=UTC),
    )
    december = window_of("monthly", at("2026-12-31T12:00:00"))
    assert (december.label, december.end) == ("2026-12", datetime(2027, 1, 1, tzinfo=UTC))
    assert window_of("monthly", at("2026-12-01T00:00:00")).label == "2026-12"
    assert window_of("total", NOW).label == "all"
    assert window_of("total", NOW).end is None
    calendar = Calendar()
    for moment in (
        "2026-11-30T23:59:59",
        "2026-12-01T00:00:00",
        "2026-11-30T10:00:00",
        "2027-01-01T00:00:00",
    ):
        for period in ("daily", "monthly", "total"):
            assert calendar.window(period, at(moment)) == window_of(period, at(moment))
    assert calendar.counters("acme", "k1", NOW) == (
        "key:k1:daily:2026-11-28",
        "key:k1:monthly:2026-11",
        "key:k1:total:all",
        "tenant:acme:daily:2026-11-28",
        "tenant:acme:monthly:2026-11",
        "tenant:acme:total:all",
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"scope": "team"},
        {"period": "weekly"},
        {"subject": ""},
        {"limit": -1},
        {"limit": 1.5},
        {"limit": True},
    ],
)
def test_a_budget_refuses_what_is_not_one(fields: dict[str, object]) -> None:
    values: dict[str, object] = {
        "scope": "tenant",
        "subject": "acme",
        "period": "daily",
        "limit": 10,
        **fields,
    }
    with pytest.raises(ValueError, match="budget"):
        Budget(**values)  # type: ignore[arg-type]


class FakeLedger:
    """What the ledger held before the keeper started, per (scope, subject, window label)."""

    def __init__(self, amounts: dict[tuple[str, str, str], int] | None = None, delay: float = 0.0) -> None:
        self.amounts = amounts or {}
        self.delay = delay
        self.calls: list[tuple[Budget, Window, datetime | None]] = []

    async def __call__(self, budget: Budget, window: Window, ended_before: datetime | None) -> int:
        self.calls.append((budget, window, ended_before))
        await asyncio.sleep(self.delay)
        return self.amounts.get((budget.scope, budget.subject, window.label), 0)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


TENANT_DAILY = Budget("tenant", "acme", "daily", 1000)
KEY_TOTAL = Budget("key", "k1", "total", 500)


async def test_reserve_holds_in_every_budget_or_in_none() -> None:
    keeper = LocalBudgets(FakeLedger(), clock=Clock(NOW))
    hold = await keeper.reserve("acme", [TENANT_DAILY, KEY_TOTAL], 400, NOW)
    assert isinstance(hold, BudgetHold)
    assert hold.counters == ("tenant:acme:daily:2026-11-28", "key:k1:total:all")
    refused = await keeper.reserve("acme", [TENANT_DAILY, KEY_TOTAL], 200, NOW)
    assert isinstance(refused, BudgetRefusal)
    assert (refused.budget, refused.remaining, refused.amount) == (KEY_TOTAL, 100, 200)
    # the refusal reserved nothing in the tenant's budget either
    statuses = await keeper.status("acme", [TENANT_DAILY, KEY_TOTAL], NOW)
    assert [(s.spent, s.reserved, s.remaining) for s in statuses] == [(0, 400, 600), (0, 400, 100)]


async def test_settling_charges_the_real_cost_and_releases_the_hold() -> None:
    keeper = LocalBudgets(FakeLedger(), clock=Clock(NOW))
    hold = await keeper.reserve("acme", [TENANT_DAILY], 600, NOW)
    assert isinstance(hold, BudgetHold)
    keeper.settle(Spend("acme", "k1", NOW, 150, hold))
    (status,) = await keeper.status("acme", [TENANT_DAILY], NOW)
    assert (status.spent, status.reserved, status.remaining) == (150, 0, 850)
    failed = await keeper.reserve("acme", [TENANT_DAILY], 850, NOW)
    assert isinstance(failed, BudgetHold)
    keeper.settle(Spend("acme", "k1", NOW, 0, failed))  # a failed request: released, nothing charged
    (status,) = await keeper.status("acme", [TENANT_DAILY], NOW)
    assert (status.spent, status.reserved) == (150, 0)
    # the next day starts empty; the key's total does not
    tomorrow = NOW + 86_400
    (day2,) = await keeper.status("acme", [TENANT_DAILY], tomorrow)
    assert (day2.window.label, day2.spent) == ("2026-11-29", 0)


async def test_spending_before_a_budget_existed_counts() -> None:
    """Charges settled with no budget in place are counted, so a budget created later starts from them."""
    keeper = LocalBudgets(FakeLedger(), clock=Clock(NOW))
    keeper.settle(Spend("acme", "k1", NOW, 300, None))
    keeper.settle(Spend("acme", "k2", NOW, 200, None))
    statuses = await keeper.status("acme", [TENANT_DAILY, KEY_TOTAL, Budget("key", "k2", "monthly", 10)], NOW)
    assert [s.spent for s in statuses] == [500, 300, 200]
    refused = await keeper.reserve("acme", [TENANT_DAILY], 501, NOW)
    assert isinstance(refused, BudgetRefusal)
    assert refused.remaining == 500


async def test_earlier_spending_is_read_from_the_ledger_once_up_to_the_start() -> None:
    ledger = FakeLedger({("tenant", "acme", "2026-11-28"): 900}, delay=0.01)
    keeper = LocalBudgets(ledger, clock=Clock(NOW))
    answers = await asyncio.gather(*(keeper.reserve("acme", [TENANT_DAILY], 30, NOW) for _ in range(50)))
    assert sum(isinstance(answer, BudgetHold) for answer in answers) == 3  # (1000 - 900) // 30
    assert len(ledger.calls) == 1
    budget, window, ended_before = ledger.calls[0]
    assert (budget, window.label) == (TENANT_DAILY, "2026-11-28")
    assert ended_before == datetime.fromtimestamp(NOW, UTC)  # rows of requests that ended before the start


async def test_a_ledger_failure_fails_the_reservation_and_is_retried() -> None:
    class Down(FakeLedger):
        async def __call__(self, budget: Budget, window: Window, ended_before: datetime | None) -> int:
            self.calls.append((budget, window, ended_before))
            if len(self.calls) == 1:
                raise ConnectionError("database down")
            return 0

    ledger = Down()
    keeper = LocalBudgets(ledger, clock=Clock(NOW))
    with pytest.raises(ConnectionError):
        await keeper.reserve("acme", [TENANT_DAILY], 10, NOW)
    assert isinstance(await keeper.reserve("acme", [TENANT_DAILY], 10, NOW), BudgetHold)
    assert len(ledger.calls) == 2


async def test_concurrent_reservations_never_overrun() -> None:
    keeper = LocalBudgets(FakeLedger(), clock=Clock(NOW))
    budget = Budget("tenant", "acme", "monthly", 20 * 77)
    answers = await asyncio.gather(*(keeper.reserve("acme", [budget], 77, NOW) for _ in range(200)))
    holds = [answer for answer in answers if isinstance(answer, BudgetHold)]
    assert len(holds) == 20
    for hold in holds:
        keeper.settle(Spend("acme", "k1", NOW, 77, hold))
    (status,) = await keeper.status("acme", [budget], NOW)
    assert (status.spent, status.reserved, status.remaining) == (20 * 77, 0, 0)


async def test_old_windows_are_forgotten() -> None:
    clock = Clock(NOW)
    keeper = LocalBudgets(FakeLedger(), clock=clock)
    keeper.settle(Spend("acme", "k1", NOW, 5, None))
    await keeper.status("acme", [TENANT_DAILY], NOW)
    clock.now = NOW + 40 * 86_400  # the sweep runs as requests settle, at most hourly
    keeper.settle(Spend("acme", "k1", clock.now, 7, None))
    counters = set(keeper._spent) | set(keeper._earlier)
    assert "tenant:acme:daily:2026-11-28" not in counters
    assert "key:k1:monthly:2026-11" not in counters
    assert keeper._spent["key:k1:total:all"] == 12
