"""Budgets shared by every replica through Redis: one script call, one round trip, per reservation; one
script call per tenant for a batch of settlements.

Each counter (a budget's window) lives in Redis from its first use: seeded with what the ledger held of
its window then, and counting every charge settled after. A hold expires on its own after `hold_ttl_s`,
so a replica that died mid-request does not keep its reservations for ever. Charges to a counter nobody
has used yet are not sent anywhere: its seed will read them from the ledger.

Redis being down, slow or restarting must not take the gateway with it: every call is bounded by
`timeout_s`, and a failed reservation either admits the request without holding anything (`fail_open`,
the default) or raises BudgetUnavailable. A restarted, empty Redis seeds each counter again from the ledger.

No settlement is lost to an outage, and none counts twice. A hung Redis runs, when it wakes, the calls that
reached its socket before it stopped, though their callers gave up on them; those that needed a new
connection never reached it. So a batch of settlements Redis did not answer is sent again every
`_RETRY_S` until it does, under the same number, newer settlements waiting behind it; the script keeps,
per counter and process, the number of the last batch it ran, and a copy of a batch that ran already
changes nothing; without that, a hang left counters below the ledger for good. The hold
of a reservation whose answer was lost is released once Redis has answered a call sent after it, so that
a reservation run late cannot come after its release and hold its amount until it expires.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from engines.loop_lag import LoopLag
from gateway.budgets.budget import Budget, Calendar, Window, counter_name
from gateway.budgets.keeper import (
    BudgetHold,
    BudgetRefusal,
    BudgetStatus,
    BudgetUnavailable,
    LedgerSpend,
    Spend,
)
from gateway.budgets.scripts import RESERVE, SEED, SETTLE, STATUS
from gateway.database.redis_link import UNAVAILABLE, RedisLink, SoonFlush

__all__ = ["RedisBudgets"]

log = logging.getLogger("tiergate.budgets")

_KEEP_ENDED_MS = 86_400_000  # a window's counters outlive it by a day: late settlements still find them
_ATTEMPTS = 3  # seeding, then asking again: a counter vanishing each time is an evicting Redis
_EXACT = 2**53  # Lua's doubles hold every integer below this
_RETRY_S = 0.5  # settlements Redis did not answer are sent again this often, until it does
_MARKS_TTL_MS = 86_400_000  # a process's marks (the last batch run per counter) outlive its last settlement
_MAX_ABANDONED = 100_000  # lost reservations' holds kept to release; past it the oldest go (they expire)


class _Vanished(RedisError):
    """Counters seeded a moment ago were gone again (Redis evicting them, or a key deleted by hand)."""


_Seeding = asyncio.Task[None]


class _Pending:
    """A counter's settlements waiting to go out: charges summed, holds to release."""

    __slots__ = ("charged", "released")

    def __init__(self) -> None:
        self.charged = 0
        self.released: list[str] = []


class RedisBudgets:
    """Counters in Redis, keyed `{prefix}budget:{<tenant>}:<counter>` (a hash: seeded, spent, reserved)
    and `...:holds` (the live holds, "<hold id>:<amount>" scored by their expiry in ms); each process's
    marks in `{prefix}budget:{<tenant>}:settled:<process>` (counter -> number of its last batch run).

    The braces are a Redis Cluster hash tag: a request's budgets are all its tenant's, so one script
    touches them all. `failures` counts the Redis calls that failed (reservations, statuses, settlements),
    for metrics."""

    remote = True

    def __init__(
        self,
        url: str,
        ledger_spend: LedgerSpend,
        *,
        prefix: str = "tiergate:",
        fail_open: bool = True,
        timeout_s: float = 0.25,
        hold_ttl_s: float = 900.0,
        settle_delay_s: float = 0.0,
        gather: Callable[[], bool] | None = None,
        max_connections: int = 512,
        lag: LoopLag | None = None,
    ) -> None:
        if hold_ttl_s <= 0:
            raise ValueError(f"hold_ttl_s must be positive, not {hold_ttl_s!r}")
        self._ledger_spend = ledger_spend
        self._prefix = prefix
        self._fail_open = fail_open
        self._hold_ttl_ms = max(1, math.ceil(hold_ttl_s * 1000))
        self._calendar = Calendar()
        # one ledger query per counter in this process, however many requests wait for its seed
        self._seeding: dict[str, _Seeding] = {}
        # hash key -> when (loop time) a seed of this process landed, kept for timeout_s: a call sent before
        # then that found no counter was answered before the seed, and needs no second ledger query
        self._landed: dict[str, float] = {}
        # Settlements go out together, one pipeline per batch, the charges to one counter summed, as soon as
        # the loop is free (settle_delay_s later, when set, and `gather` says so); each request awaits its own
        # (see RedisLimiter).
        self._pending: dict[tuple[str, str], _Pending] = {}  # (tenant, counter) -> its settlements
        self._flusher = SoonFlush(settle_delay_s, self.flush, only_if=gather)
        self._process = uuid.uuid4().hex[:12]  # names this process's marks
        self._holds = itertools.count(1)  # hold ids: the process's name and a number, unique everywhere
        self._numbers = itertools.count(1)  # of batches: one flush at a time, so each counter sees them rise
        self._flushing = asyncio.Lock()
        self._unanswered: tuple[int, dict[tuple[str, str], _Pending]] | None = None  # a batch, its number
        self._retrier = SoonFlush(_RETRY_S, self.flush)
        # (when, tenant, counters, hold member) of reservations whose answer was lost, to release
        self._abandoned: list[tuple[float, str, tuple[str, ...], str]] = []
        self._answered_at = -math.inf  # when the latest call that Redis answered was sent (loop time)
        self._hold_ttl_s = hold_ttl_s
        self._link = RedisLink(
            url,
            timeout_s=timeout_s,
            max_connections=max_connections,
            log=log,
            user="budgets",
            fail_open=fail_open,
            open_means="admitting requests unbudgeted",
            lag=lag,
        )
        self._redis = self._link.redis
        self._reserve = self._redis.register_script(RESERVE)
        self._status = self._redis.register_script(STATUS)
        self._seed = self._redis.register_script(SEED)
        self._settle = self._redis.register_script(SETTLE)

    @property
    def failures(self) -> int:
        return self._link.failures

    async def reserve(
        self, tenant: str, budgets: Sequence[Budget], amount: int, at: float
    ) -> BudgetHold | BudgetRefusal:
        _check_micros("amount", amount)
        for budget in budgets:
            _check_micros("a budget's limit", budget.limit)
            if budget.scope == "tenant" and budget.subject != tenant:
                raise ValueError(f"a request of tenant {tenant!r} has no budget of another: {budget!r}")
        hold_id = f"{self._process}-{next(self._holds)}"
        if not budgets:
            return BudgetHold(hold_id, tenant, (), amount)
        windows = [self._calendar.window(budget.period, at) for budget in budgets]
        counters = [_counter(budget, window) for budget, window in zip(budgets, windows, strict=True)]
        keys = self._keys(tenant, counters)
        args: list[int | str] = [amount, f"{hold_id}:{amount}", self._hold_ttl_ms]
        for budget, window in zip(budgets, windows, strict=True):
            args += [budget.limit, _expires_ms(window)]
        try:
            reply = await self._seeded_call(self._reserve, keys, args, budgets, windows)
        except UNAVAILABLE as exc:
            self._link.failed("reserve", exc)
            self._abandon(tenant, tuple(dict.fromkeys(counters)), f"{hold_id}:{amount}")
            if not self._fail_open:
                raise BudgetUnavailable(f"the budgets' Redis is unavailable: {exc!r}") from exc
            return BudgetHold(hold_id, tenant, (), amount)
        if int(reply[0]) == 2:
            index = int(reply[1]) - 1
            return BudgetRefusal(budgets[index], windows[index], int(reply[2]), amount)
        return BudgetHold(hold_id, tenant, tuple(dict.fromkeys(counters)), amount)

    def settle(self, spend: Spend) -> asyncio.Future[None] | None:
        try:
            _check_micros("a charge", spend.amount)  # before anything is queued: a bad one is dropped whole
            hold = spend.hold
            if hold is not None:
                member = f"{hold.id}:{hold.amount}"
                for counter in hold.counters:
                    self._pending_for(hold.tenant, counter).released.append(member)
            if spend.amount:
                for counter in self._calendar.counters(spend.tenant, spend.key_id, spend.started_at):
                    self._pending_for(spend.tenant, counter).charged += spend.amount
            if self._pending:
                return self._flusher.kick()
        except Exception:
            # settlements run as requests end: raising there would hide the real outcome
            log.exception("budgets: settling %r failed", spend)
        return None

    async def status(self, tenant: str, budgets: Sequence[Budget], at: float) -> list[BudgetStatus]:
        """As BudgetKeeper.status(): one script call, under the tenant's hash tag."""
        for budget in budgets:
            if budget.scope == "tenant" and budget.subject != tenant:
                raise ValueError(f"tenant {tenant!r} has no budget of another: {budget!r}")
        if not budgets:
            return []
        windows = [self._calendar.window(budget.period, at) for budget in budgets]
        keys = self._keys(tenant, [_counter(b, w) for b, w in zip(budgets, windows, strict=True)])
        try:
            reply = await self._seeded_call(self._status, keys, [], list(budgets), windows)
        except UNAVAILABLE as exc:
            self._link.failed("status", exc)
            raise BudgetUnavailable(f"the budgets' Redis is unavailable: {exc!r}") from exc
        return [
            BudgetStatus(budget, window, int(reply[1 + 2 * n]), int(reply[2 + 2 * n]))
            for n, (budget, window) in enumerate(zip(budgets, windows, strict=True))
        ]

    async def flush(self) -> None:
        """Send the pending settlements now, in one pipeline, after the batch Redis did not answer last
        time, if any (sent again); while Redis does not answer, try again every `_RETRY_S`. Never raises."""
        async with self._flushing:  # one batch at a time: a counter sees their numbers rise
            if self._unanswered is not None:
                if not await self._send(*self._unanswered):
                    self._retrier.kick()
                    return
                self._unanswered = None
            if self._abandoned:
                if self._abandoned[-1][0] >= self._answered_at and not await self._ping():
                    self._retrier.kick()
                    return
                self._release_abandoned()
            batch, self._pending = self._pending, {}
            if batch:
                number = next(self._numbers)
                if not await self._send(number, batch):
                    self._unanswered = (number, batch)
                    self._retrier.kick()

    async def aclose(self) -> None:
        await self._flusher.stop()
        await self._retrier.stop()
        for task in list(self._seeding.values()):
            task.cancel()
        await self.flush()  # what was pending still counts
        batches = [self._pending] if self._unanswered is None else [self._unanswered[1], self._pending]
        unsettled = [pending.charged for batch in batches for pending in batch.values() if pending.charged]
        if unsettled:
            log.error(
                "budgets: charges to %d counters (up to %d micros each) never reached Redis: those counters"
                " stay below the ledger until Redis loses them or their window ends",
                len(unsettled),
                max(unsettled),
            )
        await self._link.aclose()

    async def _send(self, number: int, batch: dict[tuple[str, str], _Pending]) -> bool:
        """Whether Redis answered (ran the batch now, or found it ran already)."""
        sent = asyncio.get_running_loop().time()
        calls: dict[str, tuple[list[str], list[int | str]]] = {}  # one script call per tenant
        for (tenant, counter), pending in batch.items():
            call = calls.get(tenant)
            if call is None:
                call = calls[tenant] = ([self._marks(tenant)], [number, _MARKS_TTL_MS])
            call[0].extend(self._keys(tenant, [counter]))
            call[1].extend((pending.charged, len(pending.released), *pending.released))
        if not await self._link.settle(self._settle, calls.values(), f"{len(batch)} counters"):
            return False
        self._answered_at = max(self._answered_at, sent)
        return True

    async def _ping(self) -> bool:
        sent = asyncio.get_running_loop().time()
        if not await self._link.ping():
            return False
        self._answered_at = max(self._answered_at, sent)
        return True

    def _abandon(self, tenant: str, counters: tuple[str, ...], member: str) -> None:
        if counters:
            if len(self._abandoned) >= _MAX_ABANDONED:
                del self._abandoned[: len(self._abandoned) // 2]
            self._abandoned.append((asyncio.get_running_loop().time(), tenant, counters, member))
            self._retrier.kick()

    def _release_abandoned(self) -> None:
        """Queue the release of the holds of lost reservations: Redis has answered a call sent after them
        (`_answered_at`), and a hung Redis runs what reached it before it stopped as soon as it wakes,
        before it answers anything sent after, so each of them has run by now, or never will."""
        now = asyncio.get_running_loop().time()
        for at, tenant, counters, member in self._abandoned:
            if now - at < self._hold_ttl_s:  # else: expired, reaped by Redis already
                for counter in counters:
                    self._pending_for(tenant, counter).released.append(member)
        self._abandoned = []

    def _pending_for(self, tenant: str, counter: str) -> _Pending:
        pending = self._pending.get((tenant, counter))
        if pending is None:
            pending = self._pending[tenant, counter] = _Pending()
        return pending

    def _marks(self, tenant: str) -> str:
        return f"{self._prefix}budget:{{{tenant}}}:settled:{self._process}"

    def _keys(self, tenant: str, counters: Sequence[str]) -> list[str]:
        """Each counter's hash and holds, in pairs."""
        keys = []
        for counter in counters:
            key = f"{self._prefix}budget:{{{tenant}}}:{counter}"
            keys += [key, key + ":holds"]
        return keys

    async def _seeded_call(
        self,
        script: AsyncScript,
        keys: list[str],
        args: list[int | str],
        budgets: Sequence[Budget],
        windows: Sequence[Window],
    ) -> Any:
        """The script's reply once every counter it reads exists, seeding those that do not."""
        loop = asyncio.get_running_loop()
        for _ in range(_ATTEMPTS):
            sent = loop.time()
            reply = await self._link.call(script, keys, args)
            self._answered_at = max(self._answered_at, sent)
            if int(reply[0]) != 1:
                return reply
            seeds = []
            for index in sorted({int(i) - 1 for i in reply[1:]}):
                hash_key, holds_key = keys[2 * index], keys[2 * index + 1]
                if self._landed.get(hash_key, -math.inf) < sent:  # else: just ask again
                    seeds.append(self._seeding_of(hash_key, holds_key, budgets[index], windows[index]))
            # shielded: a seed carries on to its end even if the request that started it goes away
            await asyncio.gather(*(asyncio.shield(seed) for seed in seeds))
        raise _Vanished(f"budget counters vanished right after being seeded, {_ATTEMPTS} times")

    def _seeding_of(self, hash_key: str, holds_key: str, budget: Budget, window: Window) -> _Seeding:
        """The seeding of a counter from the ledger: one query at a time per counter in this process.
        Looked up and started without awaiting, so that a seed landing meanwhile cannot be missed."""
        task = self._seeding.get(hash_key)
        if task is None:
            seeding = self._seed_counter(hash_key, holds_key, budget, window)
            task = self._seeding[hash_key] = asyncio.get_running_loop().create_task(seeding)
            task.add_done_callback(lambda done: self._seeded_done(hash_key, done))
        return task

    def _seeded_done(self, hash_key: str, task: _Seeding) -> None:
        if self._seeding.get(hash_key) is task:
            del self._seeding[hash_key]
        if task.cancelled() or task.exception() is not None:  # retrieved: its waiters have it already
            return
        loop = asyncio.get_running_loop()
        landed = self._landed[hash_key] = loop.time()
        loop.call_later(self._link.timeout_s, self._forget_landed, hash_key, landed)

    def _forget_landed(self, hash_key: str, landed: float) -> None:
        if self._landed.get(hash_key) == landed:
            del self._landed[hash_key]

    async def _seed_counter(self, hash_key: str, holds_key: str, budget: Budget, window: Window) -> None:
        seeded = await self._ledger_spend(budget, window, None)
        _check_micros("the ledger's spending", seeded)
        await self._link.call(self._seed, [hash_key, holds_key], [seeded, _expires_ms(window)])


def _counter(budget: Budget, window: Window) -> str:
    return counter_name(budget.scope, budget.subject, budget.period, window.label)


def _expires_ms(window: Window) -> int:
    """When a counter of this window may go (Unix ms): a day after the window ends; 0: never."""
    return 0 if window.end is None else int(window.end.timestamp() * 1000) + _KEEP_ENDED_MS


def _check_micros(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _EXACT:
        raise ValueError(f"{what} must be an integer of micros in [0, 2**53), not {value!r}")
