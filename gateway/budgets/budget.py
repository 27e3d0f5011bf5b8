"""A budget and the calendar window it applies to at a given moment. Windows are UTC calendar days and
months; a `total` budget has one window, for all time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from pricing import Micros

__all__ = [
    "PERIODS",
    "SCOPES",
    "Budget",
    "Calendar",
    "Period",
    "Scope",
    "Window",
    "check_names",
    "counter_name",
    "window_of",
]

Period = Literal["daily", "monthly", "total"]
Scope = Literal["tenant", "key"]
PERIODS: tuple[Period, ...] = get_args(Period)
SCOPES: tuple[Scope, ...] = get_args(Scope)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def check_names(scope: str, period: str) -> None:
    """ValueError unless `scope` and `period` are a budget's."""
    if scope not in SCOPES:
        raise ValueError(f"a budget's scope is one of {', '.join(SCOPES)}, not {scope!r}")
    if period not in PERIODS:
        raise ValueError(f"a budget's period is one of {', '.join(PERIODS)}, not {period!r}")


@dataclass(frozen=True, slots=True)
class Budget:
    """At most `limit` micros spent by one key or one tenant (`subject`) in each window of `period`."""

    scope: Scope
    subject: str  # a tenant id, or a key id
    period: Period
    limit: Micros

    def __post_init__(self) -> None:
        check_names(self.scope, self.period)
        if not isinstance(self.subject, str) or not self.subject:
            raise ValueError(f"a budget's subject must be a non-empty string, not {self.subject!r}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 0:
            raise ValueError(f"a budget's limit must be a non-negative integer of micros, not {self.limit!r}")

    def counter(self, at: float) -> str:
        """The name of this budget's spending counter for the window holding `at` (a Unix time)."""
        return counter_name(self.scope, self.subject, self.period, window_of(self.period, at).label)


@dataclass(frozen=True, slots=True)
class Window:
    label: str  # "2026-11-28", "2026-11", or "all"
    start: datetime
    end: datetime | None  # exclusive; None: never ends


def window_of(period: Period, at: float) -> Window:
    """The window of `period` that holds the Unix time `at`."""
    if period == "total":
        return _ALL
    moment = datetime.fromtimestamp(at, UTC)
    if period == "daily":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return Window(start.strftime("%Y-%m-%d"), start, start + timedelta(days=1))
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return Window(start.strftime("%Y-%m"), start, end)


def counter_name(scope: Scope, subject: str, period: Period, label: str) -> str:
    return f"{scope}:{subject}:{period}:{label}"


class Calendar:
    """`window_of` for the moments of a running gateway, which are nearly all in the same day: the current
    day's and month's windows are kept, so a request's windows cost a comparison, not a date computation."""

    __slots__ = ("_day", "_month", "_names")

    def __init__(self) -> None:
        self._day = self._month = (0.0, 0.0, Window("", _EPOCH, None))  # (start, end, window): empty at first
        self._names: dict[tuple[str, str, str], tuple[str, ...]] = {}  # counters() by key and day

    def window(self, period: Period, at: float) -> Window:
        if period == "total":
            return _ALL
        cached = self._day if period == "daily" else self._month
        start, end, window = cached
        if start <= at < end:
            return window
        window = window_of(period, at)
        assert window.end is not None
        cached = (window.start.timestamp(), window.end.timestamp(), window)
        if period == "daily":
            self._day = cached
        else:
            self._month = cached
        return window

    def counters(self, tenant: str, key_id: str, at: float) -> tuple[str, ...]:
        """The counters a request of this key, started at `at`, adds to: its key's and its tenant's, in
        every period."""
        day = self.window("daily", at).label
        names = self._names.get((tenant, key_id, day))
        if names is None:
            labels = (day, self.window("monthly", at).label, _ALL.label)
            names = tuple(
                counter_name(scope, subject, period, label)
                for scope, subject in _subjects(tenant, key_id)
                for period, label in zip(PERIODS, labels, strict=True)
            )
            if len(self._names) >= _MAX_NAMES:  # yesterday's and idle keys' go together, now and then
                self._names.clear()
            self._names[tenant, key_id, day] = names
        return names


def _subjects(tenant: str, key_id: str) -> tuple[tuple[Scope, str], ...]:
    return (("key", key_id), ("tenant", tenant))


_ALL = Window("all", _EPOCH, None)
_MAX_NAMES = 65_536
