"""Priority per tier: the fast tier's promise holds while deliberations flood.

The policy (documented in docs/overload.md): every tier may hold at most its share of the door's limit in
flight (`server.tier_shares`: the deliberate tier 0.8 by default, the fast tier all of it), so that a flood
of deliberations - long, and costly to the loop - always leaves the fast tier room. A request over its tier's
share waits in that tier's queue, which is bounded (`server.max_queued`), ordered by the tenant's priority
class and then by arrival, and served as its tier's requests end; a request that would wait past its tier's
deadline (`server.max_queue_wait_s`, from the tier's SLO: a fast request that waits long has missed its
promise) is shed with 503 `gateway_overloaded` and `retry-after`. A waiting request is not counted by the door
(it costs a future, not the loop), so waiting deliberations never keep a fast request out.

Pure: the door's limit is read through the door, time through the clock passed in; `enter` is the only
coroutine, and waits for an event (`release`), so tests drive it without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from engines.loop_lag import LoopLag
from gateway.http.door import AdaptiveLimit, Door

__all__ = ["CLASSES", "Queued", "Shed", "Slot", "TierQueues"]

CLASSES = ("premium", "standard")  # tenants' priority classes, first served first


class Shed(Exception):
    """A request that could not get a slot of its tier in time (or found its queue full)."""

    def __init__(self, tier: str, reason: str, retry_after_s: float) -> None:
        super().__init__(f"the {tier} tier is saturated ({reason})")
        self.tier = tier
        self.reason = reason  # "queue_full" or "deadline"
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class Slot:
    """A tier's place in flight, held until `TierQueues.release` (gateway.http.dispatch, at the end)."""

    tier: str
    waited_s: float


@dataclass(frozen=True, slots=True)
class Queued:
    """How a tier's queue stands, for metrics."""

    length: int
    in_flight: int
    waited: int  # requests that waited, then went in
    waited_s: float  # their waits, summed
    shed: int


class _Tier:
    __slots__ = (
        "adaptive",
        "in_flight",
        "max_queued",
        "max_wait_s",
        "queue",
        "seen",
        "share",
        "shed",
        "waited",
        "waited_s",
    )

    def __init__(
        self, share: float, max_wait_s: float, max_queued: int, adaptive: AdaptiveLimit | None
    ) -> None:
        self.share = share
        self.adaptive = adaptive  # squeezed by the loop's lag before the door's limit is
        self.seen = -1  # the lag's tick `adaptive` last saw
        self.max_wait_s = max_wait_s
        self.max_queued = max_queued
        self.in_flight = 0
        self.queue: list[tuple[int, int, asyncio.Future[None]]] = []  # (class rank, arrival, granted)
        self.waited = 0
        self.waited_s = 0.0
        self.shed = 0


class TierQueues:
    def __init__(
        self,
        door: Door,
        shares: Mapping[str, float],
        max_wait_s: Mapping[str, float],
        *,
        max_queued: int = 256,
        clock: Callable[[], float] = time.monotonic,
        lag: LoopLag | None = None,
        target_lag_s: float = 0.0,
        target_utilization: float = 1.0,
    ) -> None:
        """`lag` and `target_lag_s` > 0: each queued tier's cap is also an AIMD limit on the loop's lag and
        utilization with these targets (below the door's): they squeeze the tiers that queue before the
        door's limit, which every tier meets, has to fall."""
        self._door = door
        self._lag = lag if target_lag_s > 0 else None
        ceiling = door.limit

        def adaptive(share: float) -> AdaptiveLimit | None:
            if self._lag is None:
                return None
            return AdaptiveLimit(
                max(1, math.floor(share * ceiling)),
                target_s=target_lag_s,
                floor=1,
                target_utilization=target_utilization,
            )

        self._tiers = {
            tier: _Tier(share, max_wait_s.get(tier, 0.0), max_queued, adaptive(share))
            for tier, share in shares.items()
        }
        self._clock = clock
        self._arrivals = itertools.count()

    def cap(self, tier: str) -> int:
        """How many of the tier's requests may be in flight now: its share of the door's limit, at least 1,
        and no more than its own adaptive limit."""
        state = self._tiers[tier]
        cap = max(1, math.floor(state.share * self._door.limit))
        adaptive, lag = state.adaptive, self._lag
        if adaptive is None or lag is None:
            return cap
        if lag.ticks != state.seen:
            state.seen = lag.ticks
            adaptive.update(lag.smoothed_s, state.in_flight, lag.utilization, lag.busy_now)
        return min(cap, adaptive.current)

    async def enter(self, tier: str, klass: str = "standard") -> Slot | None:
        """A slot of `tier` for a request the door let in: at once while the tier is under its share and
        nobody waits, else after waiting in the tier's queue (out of the door's count meanwhile)."""
        state = self._tiers.get(tier)
        if state is None:  # a tier without a share is not queued
            return None
        if state.in_flight < self.cap(tier) and not state.queue:
            state.in_flight += 1
            self._door.hand_over()  # counted by its tier from now on
            return Slot(tier, 0.0)
        if len(state.queue) >= state.max_queued or state.max_wait_s <= 0:
            return self._shed(state, tier, "queue_full")
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (_rank(klass), next(self._arrivals), granted)
        heapq.heappush(state.queue, entry)
        self._door.leave()  # waiting costs a future, not the loop: it keeps no fast request out
        start = self._clock()
        try:
            async with asyncio.timeout(state.max_wait_s):
                await granted
        except BaseException as exc:
            if granted.done() and not granted.cancelled():  # granted as it gave up: it gives the slot back
                self._door.held_elsewhere -= 1
                state.in_flight -= 1
                self._pump(tier, state)
            else:
                granted.cancel()
                _remove(state.queue, entry)
            self._door.in_flight += 1  # gateway.http.dispatch counts it out at its end
            if isinstance(exc, TimeoutError):
                return self._shed(state, tier, "deadline")
            raise  # the client left, the server stops
        waited = self._clock() - start
        state.waited += 1
        state.waited_s += waited
        return Slot(tier, waited)

    def release(self, slot: Slot) -> None:
        """The slot's request ended: the tier's first waiter, if any and if its share allows, goes in."""
        state = self._tiers.get(slot.tier)
        if state is not None:
            state.in_flight -= 1
            self._door.held_elsewhere -= 1
            self._pump(slot.tier, state)

    def _pump(self, tier: str, state: _Tier) -> None:
        while state.queue and state.in_flight < self.cap(tier):
            _, _, granted = heapq.heappop(state.queue)
            if granted.done():  # gave up a moment ago
                continue
            state.in_flight += 1
            self._door.held_elsewhere += 1  # counted by its tier, and against the door's ceiling
            granted.set_result(None)

    def queued(self) -> dict[str, Queued]:
        return {
            tier: Queued(len(s.queue), s.in_flight, s.waited, s.waited_s, s.shed)
            for tier, s in self._tiers.items()
        }

    def _shed(self, state: _Tier, tier: str, reason: str) -> Slot:
        state.shed += 1
        raise Shed(tier, reason, max(1.0, state.max_wait_s))


def _rank(klass: str) -> int:
    try:
        return CLASSES.index(klass)
    except ValueError:
        return len(CLASSES)


def _remove(
    queue: list[tuple[int, int, asyncio.Future[None]]], entry: tuple[int, int, asyncio.Future[None]]
) -> None:
    try:
        queue.remove(entry)
    except ValueError:
        return
    heapq.heapify(queue)
