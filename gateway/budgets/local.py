"""Budgets kept in this process: for a single gateway replica, for development, and for tests.

Exact across restarts: every charge this process settles is counted from its start, for every key and
tenant (a budget created later must see what was spent before it), and what was spent before the process
started is read from the ledger once per budget and window - only the rows of requests that ended before
that start, so no request is counted twice and none is missed, whatever the ledger's drain has reached.
With several replicas each counts only its own requests: configure Redis to share budgets between them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from gateway.budgets.budget import Budget, Calendar, counter_name
from gateway.budgets.keeper import BudgetHold, BudgetRefusal, BudgetStatus, LedgerSpend, Spend

__all__ = ["LocalBudgets"]

_SWEEP_EVERY_S = 3600.0
_KEEP_ENDED_S = 86_400.0  # a window's counters outlive it by a day: late settlements still find them


class LocalBudgets:
    """Counters in dicts. Decisions never await once a budget's earlier spending is loaded, so each reserve
    and settle is atomic on the event loop without a lock."""

    remote = False

    def __init__(self, ledger_spend: LedgerSpend, *, clock: Callable[[], float] = time.time) -> None:
        self._ledger_spend = ledger_spend
        self._clock = clock
        self._started = datetime.fromtimestamp(clock(), UTC)
        self._calendar = Calendar()
        self._earlier: dict[str, int] = {}  # counter -> what the ledger held of it when this process started
        self._loading: dict[str, asyncio.Task[int]] = {}
        self._spent: dict[str, int] = {}  # counter -> charges settled by this process
        self._reserved: dict[str, int] = {}  # counter -> holds of requests still running
        self._ends: dict[str, float] = {}  # counter -> when its window ends (Unix time)
        self._ids = itertools.count(1)
        self._next_sweep = clock() + _SWEEP_EVERY_S

    async def reserve(
        self, tenant: str, budgets: Sequence[Budget], amount: int, at: float
    ) -> BudgetHold | BudgetRefusal:
        counters = [self._counter(budget, at) for budget in budgets]
        for budget, counter in zip(budgets, counters, strict=True):
            if counter not in self._earlier:
                await self._load(budget, counter, at)
        # from here on nothing awaits: the check and the reservation are one step
        for budget, counter in zip(budgets, counters, strict=True):
            room = budget.limit - self._used(counter)
            if amount > room:
                window = self._calendar.window(budget.period, at)
                return BudgetRefusal(budget, window, max(0, room), amount)
        for counter in counters:
            self._reserved[counter] = self._reserved.get(counter, 0) + amount
        return BudgetHold(f"h{next(self._ids)}", tenant, tuple(counters), amount)

    def settle(self, spend: Spend) -> None:
        if spend.hold is not None:
            for counter in spend.hold.counters:
                left = self._reserved.get(counter, 0) - spend.hold.amount
                if left > 0:
                    self._reserved[counter] = left
                else:
                    self._reserved.pop(counter, None)
        if spend.amount:
            spent = self._spent
            for counter in self._calendar.counters(spend.tenant, spend.key_id, spend.started_at):
                spent[counter] = spent.get(counter, 0) + spend.amount
        self._sweep()

    async def status(self, tenant: str, budgets: Sequence[Budget], at: float) -> list[BudgetStatus]:
        statuses = []
        for budget in budgets:
            counter = self._counter(budget, at)
            if counter not in self._earlier:
                await self._load(budget, counter, at)
            window = self._calendar.window(budget.period, at)
            spent = self._earlier[counter] + self._spent.get(counter, 0)
            statuses.append(BudgetStatus(budget, window, spent, self._reserved.get(counter, 0)))
        return statuses

    async def flush(self) -> None:
        pass  # settlements apply at once

    async def aclose(self) -> None:
        for task in list(self._loading.values()):
            task.cancel()

    def _counter(self, budget: Budget, at: float) -> str:
        window = self._calendar.window(budget.period, at)
        counter = counter_name(budget.scope, budget.subject, budget.period, window.label)
        if window.end is not None and counter not in self._ends:
            self._ends[counter] = window.end.timestamp()
        return counter

    def _used(self, counter: str) -> int:
        return self._earlier[counter] + self._spent.get(counter, 0) + self._reserved.get(counter, 0)

    async def _load(self, budget: Budget, counter: str, at: float) -> None:
        """What was spent in the counter's window before this process started: one ledger query per counter,
        however many requests wait for it, and not abandoned when the request that started it goes away."""
        task = self._loading.get(counter)
        if task is None:
            window = self._calendar.window(budget.period, at)
            task = asyncio.get_running_loop().create_task(self._ledger_spend(budget, window, self._started))
            self._loading[counter] = task
            task.add_done_callback(lambda _: self._loading.pop(counter, None))
        earlier = await asyncio.shield(task)
        self._earlier.setdefault(counter, earlier)

    def _sweep(self) -> None:
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY_S
        for counter in [c for c, end in self._ends.items() if end + _KEEP_ENDED_S < now]:
            if counter not in self._reserved:
                for table in (self._earlier, self._spent, self._ends):
                    table.pop(counter, None)
        # charges to counters no budget ever read (keys without budgets) go by the time their window ended
        for counter in [c for c in self._spent if c not in self._ends and _ended(c, now)]:
            del self._spent[counter]


def _ended(counter: str, now: float) -> bool:
    """Whether a counter's window ended more than a day before `now`, from its name alone."""
    label = counter.rsplit(":", 1)[-1]
    if label == "all":
        return False
    fmt = "%Y-%m-%d" if len(label) == 10 else "%Y-%m"
    start = datetime.strptime(label, fmt).replace(tzinfo=UTC)
    # a day or a month past its start is past its end once a month and a day have gone by
    return start.timestamp() + 32 * 86_400.0 + _KEEP_ENDED_S < now
