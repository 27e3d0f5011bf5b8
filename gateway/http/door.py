"""The door: which inference requests one worker lets in.

Refused, before any work is done for them (no key lookup, no Redis, no reservation), with 503
`gateway_overloaded` and `retry-after`: requests beyond the worker's concurrency limit in flight (a stream
counts until its last byte), every request while the worker's own event loop lags past
`server.shed_loop_lag_s` (the loop is the bottleneck: whatever it takes on now waits behind the rest), and
every request for a moment after the gateway ran short of file descriptors or memory (`engines.LocalOverload`,
reported by the pools).

The limit is `server.max_concurrent_requests`, fixed (`server.concurrency: fixed`), or adaptive below it
(`AdaptiveLimit`, the default): additive increase while the loop keeps up and the limit binds,
multiplicative decrease when the loop lags past `server.target_loop_lag_s`, is busier than
`server.target_utilization`, or makes requests wait longer than `server.target_wait_s` (5 ms) before their
engine call, and a hold (nothing more let in) while the loop is full over its last few ticks before the long
average sees it. The signals are the loop's own, not requests' latency (Netflix's gradient, Envoy's adaptive
concurrency): a gateway's latency is its engines', and an engine that is slow must not shrink the door, while
the lag, the loop's busy share and a request's wait before its engine call are the gateway's own saturation
and nothing else. A refusal costs a set lookup, a few integer operations and a clock read; the protocol asks
the door as a request's headers arrive (`turn_away`, gateway.http.connections) and answers a refusal there.

A request of a queued tier that takes its tier's slot (gateway.http.tier_queues) is handed over: it counts
against its tier's cap from then on, not the limit, so deliberations in flight never fill the door the fast
tier meets; every request still counts against the ceiling, `server.max_concurrent_requests`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engines.loop_lag import LoopLag

__all__ = ["LEASE", "REASONS", "SHUT_S", "SLOT", "AdaptiveLimit", "Door"]

SLOT = "tiergate.slot"  # where in the request's scope the handler keeps its tier's slot
LEASE = "tiergate.lease"  # and its place among its key's requests in flight (gateway.limits.Concurrency)
SHUT_S = 1.0  # how long a shortage shuts the door: as long as asyncio pauses accepting after EMFILE


class AdaptiveLimit:
    """AIMD on the loop's lag and utilization: each tick of the lag (`update`) moves the limit within
    [floor, ceiling]. Above `target_utilization` (the loop's busy share of the wall clock) the limit backs off
    as above `target_s` of lag: a loop busy nearly all the time keeps its timers nearly on time, but every
    request waits its many long turns (1: lag alone). And while the loop is full over its last few ticks,
    before the long average sees it, the limit is held at what is in flight (`current`). Above
    `target_wait_s` of requests' own wait (arrival to engine call; 0: not watched) on a loop at least half
    busy it backs off too, in proportion: the wait is what a time to first byte is made of, whatever the
    machine's speed."""

    __slots__ = (
        "_calm",
        "_held",
        "ceiling",
        "floor",
        "limit",
        "target_s",
        "target_utilization",
        "target_wait_s",
    )

    def __init__(
        self,
        ceiling: int,
        *,
        target_s: float,
        floor: int = 8,
        target_utilization: float = 1.0,
        target_wait_s: float = 0.0,
    ) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.target_s = target_s
        self.target_utilization = target_utilization
        self.target_wait_s = target_wait_s
        self.limit = ceiling  # a door that was never saturated lets in what the fixed one would
        self._calm = 0  # ticks to let pass before backing off again: a cut needs time to show in the lag
        self._held: int | None = None  # while the loop is full before the average crosses: what was in

    @property
    def current(self) -> int:
        """What the door admits up to now: the limit, or less while a full loop holds it."""
        return self.limit if self._held is None else self._held

    def update(
        self,
        lag_s: float,
        in_flight: int,
        utilization: float = 0.0,
        busy_now: float = 0.0,
        wait_s: float = 0.0,
    ) -> int:
        """What the door admits up to (`current`) after a tick of lateness `lag_s`, `utilization` and
        requests' own `wait_s` (moving averages) with `in_flight` requests admitted; `busy_now`: the loop's
        busy share over the last few ticks."""
        # a wait counts while the loop is busy: on a loop mostly idle it is a dependency's (a slow Redis, a
        # key store), which shedding would not shorten
        waits = 0.0 < self.target_wait_s < wait_s and utilization > _WAIT_BUSY_FROM
        if lag_s > self.target_s or utilization > self.target_utilization or waits:
            self._held = None
            if self._calm > 0:
                self._calm -= 1
            else:
                # to 90% of what is in flight, or in proportion where the loop is busier (or requests wait
                # longer) than that: a surge cut at once, not over several calm periods
                factor = _BACKOFF
                if utilization > self.target_utilization:
                    factor = min(_BACKOFF, max(_DEEPEST, self.target_utilization / utilization))
                if waits:
                    factor = min(factor, max(_DEEPEST, self.target_wait_s / wait_s))
                self.limit = max(self.floor, min(self.limit, int(in_flight * factor)))
                self._calm = _CALM_TICKS
        elif (
            busy_now >= _FULL
            and self.target_utilization < 1
            and utilization > self.target_utilization * _HOLD_FROM
        ):
            # full now, while the long average still climbs: held at what was in when it filled (a surge
            # stopped there, not where the average sees it half a second later), until the average cuts
            # or the loop has room again; a hold, not a cut: it does not follow those in flight down
            if self._held is None:
                self._held = max(self.floor, min(self.limit, in_flight))
        else:
            self._held = None
            if in_flight >= self.limit - 1 and self.limit < self.ceiling:  # it binds: probe upwards
                self.limit += 1
        return self.current


_BACKOFF = 0.9
_FULL = 0.97  # a loop this busy over its last few ticks has no room for more
_HOLD_FROM = 0.5  # ... and holds the door only once the long average is past half the target (not on a spike)
_DEEPEST = 0.5  # the most one cut takes off
_WAIT_BUSY_FROM = 0.5  # requests' waits cut the limit only while the loop is busier than this
_CALM_TICKS = 10  # at most one cut per 10 ticks of the lag (half a second, or more while the loop lags)
REASONS = ("limit", "loop_lag", "shortage")  # why the door refused (metrics)


class Door:
    """The count of inference requests in flight in this worker, against its limit and its loop's lag."""

    __slots__ = (
        "_adaptive",
        "_clock",
        "_lag",
        "_seen",
        "_shed_lag_s",
        "_shut_until",
        "ceiling",
        "held_elsewhere",
        "in_flight",
        "limit",
        "refused",
    )

    def __init__(
        self,
        limit: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        lag: LoopLag | None = None,
        shed_lag_s: float = 0.0,
        adaptive: AdaptiveLimit | None = None,
    ) -> None:
        """`lag`: the worker's loop lag; with it, `shed_lag_s` > 0 refuses every request while the lag is
        above it, and `adaptive` (if given) moves the limit with each tick of the lag."""
        self.limit = limit
        self.ceiling = limit  # every request counts against it: it is sized against the open-file limit
        self.in_flight = 0  # requests the limit governs: not yet classified, or of a tier that does not queue
        self.held_elsewhere = (
            0  # requests of a queued tier holding their tier's slot (gateway.http.tier_queues)
        )
        self._shut_until = 0.0
        self._clock = clock
        self._lag = lag
        self._shed_lag_s = shed_lag_s if lag is not None else 0.0
        self._adaptive = adaptive if lag is not None else None
        self._seen = -1  # the lag's tick the adaptive limit last saw
        self.refused = dict.fromkeys(REASONS, 0)

    def admit(self) -> bool:
        """Let one more in (then `leave()` when it is done), or refuse it."""
        lag = self._lag
        if lag is not None:
            adaptive = self._adaptive
            if adaptive is not None and lag.ticks != self._seen:
                self._seen = lag.ticks
                self.limit = adaptive.update(
                    lag.smoothed_s, self.in_flight, lag.utilization, lag.busy_now, lag.wait_s
                )
            if self._shed_lag_s and lag.sustained() >= self._shed_lag_s:
                self.refused["loop_lag"] += 1
                return False
        if self.in_flight >= self.limit or self.occupied >= self.ceiling:
            self.refused["limit"] += 1
            return False
        if self._shut_until:  # the clock is read only while shut
            if self._clock() < self._shut_until:
                self.refused["shortage"] += 1
                return False
            self._shut_until = 0.0
        self.in_flight += 1
        return True

    def turn_away(self) -> bool:
        """Whether the door refuses one more request now (counted as `admit` counts it); one it would let in
        is not let in here: the protocol asks as a request's headers arrive (gateway.http.connections), and
        the app's `admit` lets it in."""
        if self.admit():
            self.in_flight -= 1
            return False
        return True

    @property
    def saturated(self) -> bool:
        """Whether the door refuses new requests now (for /readyz: a balancer steers away)."""
        if self._shut_until and self._clock() < self._shut_until:
            return True
        if self._shed_lag_s and self._lag is not None and self._lag.sustained() >= self._shed_lag_s:
            return True
        return self.in_flight >= self.limit or self.occupied >= self.ceiling

    @property
    def occupied(self) -> int:
        """Every inference request this worker holds: those the limit governs, those in their tier's slot."""
        return self.in_flight + self.held_elsewhere

    def leave(self) -> None:
        self.in_flight -= 1

    def hand_over(self) -> None:
        """An admitted request now counts against its tier's cap instead of the limit (and the ceiling)."""
        self.in_flight -= 1
        self.held_elsewhere += 1

    def shut(self) -> None:
        """The gateway ran short: refuse every new request for `SHUT_S`."""
        self._shut_until = self._clock() + SHUT_S
