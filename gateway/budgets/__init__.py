"""Spending budgets per API key and per tenant, per period (daily, monthly, total), in micros of the price
book's currency.

    Budget           a limit on what one key or one tenant may spend in one period
    BudgetKeeper     the interface: reserve() a request's worst-case cost before it runs, settle() its
    ├── LocalBudgets real charge after it ran (a failed request's is 0: the reservation is released)
    └── RedisBudgets shared by every replica through Redis, reservations expiring on their own

A request is admitted only if every budget that applies to it (its key's and its tenant's) has room for
its worst-case cost beyond what was spent and what is reserved by requests still running; then it is
reserved in all of them at once, and a refusal reserves nothing. Spending before the keeper started is
read from the ledger, once per budget and window.
"""

from gateway.budgets.budget import PERIODS, SCOPES, Budget, Calendar, Period, Scope, Window, window_of
from gateway.budgets.keeper import (
    BudgetHold,
    BudgetKeeper,
    BudgetRefusal,
    BudgetStatus,
    BudgetUnavailable,
    LedgerSpend,
    Spend,
)
from gateway.budgets.local import LocalBudgets
from gateway.budgets.redis import RedisBudgets

__all__ = [
    "PERIODS",
    "SCOPES",
    "Budget",
    "BudgetHold",
    "BudgetKeeper",
    "BudgetRefusal",
    "BudgetStatus",
    "BudgetUnavailable",
    "Calendar",
    "LedgerSpend",
    "LocalBudgets",
    "Period",
    "RedisBudgets",
    "Scope",
    "Spend",
    "Window",
    "window_of",
]
