"""The one interface the gateway holds budgets by, and what passes through it."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.budgets.budget import Budget, Window
from pricing import Micros

__all__ = [
    "BudgetHold",
    "BudgetKeeper",
    "BudgetRefusal",
    "BudgetStatus",
    "BudgetUnavailable",
    "LedgerSpend",
    "Spend",
]


class BudgetUnavailable(Exception):
    """The shared store of budgets could not be reached, and the keeper was told not to fail open."""


@dataclass(frozen=True, slots=True)
class BudgetHold:
    """A request's reservation, held in every counter it names until settle() releases it."""

    id: str  # unique among the holds of a keeper, and across replicas for a shared one
    tenant: str
    counters: tuple[str, ...]  # Budget.counter() of each budget it was reserved in
    amount: Micros


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    """No room: `budget`, the first found full, has `remaining` left in `window`, less than `amount`."""

    budget: Budget
    window: Window
    remaining: Micros
    amount: Micros


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    budget: Budget
    window: Window
    spent: Micros  # charged by requests that ended (the ledger's rows of the window, and those on their way)
    reserved: Micros  # held by requests still running

    @property
    def remaining(self) -> Micros:
        return max(0, self.budget.limit - self.spent - self.reserved)


@dataclass(frozen=True, slots=True)
class Spend:
    """A request's real charge, for settle(); `started_at` (Unix time) places it in its windows, as the
    ledger does. `hold` is its reservation, if it took one."""

    tenant: str
    key_id: str
    started_at: float
    amount: Micros
    hold: BudgetHold | None


class LedgerSpend(Protocol):
    async def __call__(self, budget: Budget, window: Window, ended_before: datetime | None) -> Micros:
        """What the ledger holds for the budget's subject in `window` (by the rows' start), counting only
        the rows of requests that ended before `ended_before` when it is given."""
        ...


class BudgetKeeper(Protocol):
    remote: bool  # True when its calls go over the network (as RateLimiter.remote)

    async def reserve(
        self, tenant: str, budgets: Sequence[Budget], amount: Micros, at: float
    ) -> BudgetHold | BudgetRefusal:
        """Reserve `amount` in every budget (all of the same tenant: its own and its keys'), in the window
        holding `at`, atomically: either all of them had room (spent + reserved + amount <= limit) and now
        hold it, or none changed and the answer says which had not."""
        ...

    def settle(self, spend: Spend) -> Awaitable[None] | None:
        """Record a request's real charge and release its reservation. Called for every rated request of
        a tenant, with or without a hold; never raises: applied at once (None), or sent with the others
        settled meanwhile as soon as the loop is free, and then the awaitable returned is done (awaited by the
        request before its response ends)."""
        ...

    async def status(self, tenant: str, budgets: Sequence[Budget], at: float) -> list[BudgetStatus]:
        """Where each budget (the tenant's own, or its keys') stands in the window holding `at`."""
        ...

    async def flush(self) -> None:
        """Send the settlements still waiting to go out (nothing to do in process)."""
        ...

    async def aclose(self) -> None: ...
