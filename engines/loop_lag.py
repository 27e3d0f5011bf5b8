"""The event loop's lag: how late this process runs what it scheduled, and deadlines that allow for it.

A saturated loop runs every callback late: a health check's answer, a Redis reply, a timer. A deadline
measured on the wall clock then expires for our slowness, not the dependency's, and a healthy replica is
ejected, a Redis call fails closed. `LoopLag` ticks every `interval_s` and keeps, as `stalled()`, the
seconds the loop has spent late since it started (each tick's lateness, and the lateness of the tick now
overdue); `deadline()` is `asyncio.timeout` on the time the loop was free to run the awaited work: it
expires once `seconds` of that have passed, or `at_most` of the wall clock (a dependency that is really
down still fails), and says whether it expired for our lag rather than the dependency's (`inconclusive`).

Lag alone sees saturation late: a loop busy 90% of the time still runs its timers nearly on time, yet a
request that needs ten turns of it waits ten of its long turns. So each tick also reads the loop thread's
CPU time: `utilization` (moving average) is the share of the wall clock the loop spent working, the signal
that rises before the lag does. And what those turns cost a request is measured too: `waited(s)` is told each
request's own wait (from its arrival to its engine call, less any time in its tier's queue), and `wait_s` is
the moving average of the ticks' means: the gateway's own part of a time to first byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["PATIENCE", "Deadline", "LoopLag"]

PATIENCE = 10.0  # a deadline waits for a lagging loop up to this many times its own length
_DECAY = 0.5  # `recent` halves each tick: a burst of lag is seen for a few ticks, not for ever
_SMOOTHING = 0.25  # `smoothed`: each tick's weight in the moving average (a one-off hiccup barely moves it)
# `utilization`: each tick's weight, about half a second's worth of ticks (a tick's own share swings with what
# happened to be ready in it: a burst of arrivals, a batch of tokens)
_UTILIZATION_SMOOTHING = 0.1
# `busy_now`: a short average (about three ticks) that sees a surge fill the loop before the long one does
_BUSY_NOW_SMOOTHING = 0.35
# `wait_s`: each tick's mean wait's weight, about half a second's (a pause of the loop, a collection of the
# garbage, makes one tick's requests all wait: that alone must not cut the limit)
_WAIT_SMOOTHING = 0.1


class LoopLag:
    """The lag of the running loop, measured by a task that sleeps `interval_s` and sees how late it wakes.

    `tick(expected, now)` is the measurement (pure: tests drive it with their own clock); `start()` runs it.
    `saturated_s`: a recent lag above it means the loop itself is the bottleneck (the door sheds, a timeout is
    not held against a replica)."""

    __slots__ = (
        "_clock",
        "_expected",
        "_stalled",
        "_task",
        "_wait_sum",
        "_waits",
        "busy_now",
        "interval_s",
        "last_s",
        "peak_s",
        "recent_s",
        "saturated_s",
        "smoothed_s",
        "ticks",
        "utilization",
        "wait_s",
        "waited_s",
        "waits",
    )

    def __init__(
        self,
        interval_s: float = 0.05,
        *,
        saturated_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s!r}")
        self.interval_s = interval_s
        self.saturated_s = saturated_s
        self._clock = clock
        self._stalled = 0.0  # lateness of the ticks measured so far
        self._expected: float | None = None  # when the next tick is due; None: not ticking
        self.last_s = 0.0  # the last tick's lateness
        self.recent_s = 0.0  # decaying peak of the ticks' lateness
        self.peak_s = 0.0  # the largest lateness seen (for metrics)
        self.smoothed_s = 0.0  # moving average of the ticks' lateness: sustained lag, what the door sheds on
        self.utilization = 0.0  # moving average of the loop's busy share of the wall clock between ticks
        self.busy_now = 0.0  # the same over the last few ticks
        self.wait_s = 0.0  # moving average of requests' own waits (`waited`), a tick's mean at a time
        self._wait_sum = 0.0  # the waits told since the last tick, and how many
        self._waits = 0
        self.waits = 0  # the waits told, and their seconds, up to the last tick (for metrics)
        self.waited_s = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self._clock()

    def expect(self, at: float) -> None:
        """The next tick is due at `at` (its lateness counts as lag from then on, even before it runs)."""
        self._expected = at

    def waited(self, seconds: float) -> None:
        """A request waited `seconds` of its own in this worker before its engine call (two additions: it is
        on every request's path)."""
        self._wait_sum += seconds
        self._waits += 1

    def tick(self, expected: float, now: float, busy: float | None = None) -> None:
        """A tick due at `expected` ran at `now`; `busy`: the share of the wall clock since the previous tick
        the loop's thread spent on the CPU (0 to 1), when measured."""
        if self._waits:
            mean = self._wait_sum / self._waits
            self.wait_s += _WAIT_SMOOTHING * (mean - self.wait_s)
            self.waits += self._waits
            self.waited_s += self._wait_sum
            self._wait_sum, self._waits = 0.0, 0
        else:  # no request reached its engine since the last tick: what was seen fades
            self.wait_s *= _DECAY
        if busy is not None:
            busy = min(1.0, max(0.0, busy))
            self.utilization += _UTILIZATION_SMOOTHING * (busy - self.utilization)
            self.busy_now += _BUSY_NOW_SMOOTHING * (busy - self.busy_now)
        late = max(0.0, now - expected)
        self._stalled += late
        self.last_s = late
        self.recent_s = max(late, self.recent_s * _DECAY)
        self.peak_s = max(self.peak_s, late)
        self.smoothed_s += _SMOOTHING * (late - self.smoothed_s)
        self.ticks += 1
        self._expected = None

    def overdue(self, now: float) -> float:
        """How late the tick now due already is (0 when it is not due yet, or nothing ticks)."""
        expected = self._expected
        return 0.0 if expected is None else max(0.0, now - expected)

    def stalled(self, now: float | None = None) -> float:
        """Seconds the loop has run late since it started, the overdue tick's included: rises with the clock
        while the loop is stuck, stands still while it keeps up."""
        if now is None:
            now = self._clock()
        return self._stalled + self.overdue(now)

    def current(self, now: float | None = None) -> float:
        """The lag now: the recent ticks' or the overdue one's, the larger."""
        if now is None:
            now = self._clock()
        return max(self.recent_s, self.overdue(now))

    def sustained(self, now: float | None = None) -> float:
        """The lag the loop sustains: the ticks' moving average, or the overdue tick's lateness once it
        exceeds that (a loop stuck now is stuck, however calm it was)."""
        if now is None:
            now = self._clock()
        return max(self.smoothed_s, self.overdue(now))

    @property
    def saturated(self) -> bool:
        return self.current() >= self.saturated_s

    def deadline(
        self,
        seconds: float,
        *,
        at_most: float | None = None,
        on_expire: Callable[[], object] | None = None,
    ) -> Deadline:
        """A deadline of `seconds` of time the loop was free, and at most `at_most` (default `PATIENCE` x
        `seconds`) of the wall clock; `on_expire` is called as it expires, before the awaited work is
        cancelled."""
        at_most = seconds * PATIENCE if at_most is None else max(at_most, seconds)
        return Deadline(self, seconds, at_most, on_expire)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        while True:
            expected = self._clock() + self.interval_s
            self.expect(expected)
            await asyncio.sleep(self.interval_s)
            now_wall, now_cpu = time.perf_counter(), time.thread_time()
            busy = (now_cpu - cpu) / (now_wall - wall) if now_wall > wall else None
            wall, cpu = now_wall, now_cpu
            self.tick(expected, self._clock(), busy)


class Deadline:
    """`async with lag.deadline(s) as deadline:` - as `asyncio.timeout(s)`, but `s` counts only the time the
    loop was free. When it raises TimeoutError, `inconclusive` says it expired on `at_most` with less than
    `s` of free time spent: the work could not run on time, which says nothing of who was waiting for it."""

    __slots__ = (
        "_at_most",
        "_handle",
        "_lag",
        "_on_expire",
        "_seconds",
        "_stalled",
        "_start",
        "_timeout",
        "inconclusive",
    )

    def __init__(
        self, lag: LoopLag, seconds: float, at_most: float, on_expire: Callable[[], object] | None = None
    ) -> None:
        self._lag = lag
        self._seconds = seconds
        self._at_most = at_most
        self._on_expire = on_expire
        self._timeout = asyncio.timeout(None)
        self._handle: asyncio.TimerHandle | None = None
        self._start = self._stalled = 0.0
        self.inconclusive = False

    async def __aenter__(self) -> Deadline:
        await self._timeout.__aenter__()
        self._start = now = self._lag.now()
        self._stalled = self._lag.stalled(now)
        self._handle = asyncio.get_running_loop().call_later(self._seconds, self._check)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        await self._timeout.__aexit__(kind, exc, tb)  # raises TimeoutError if it expired

    def _check(self) -> None:
        lag = self._lag
        now = lag.now()
        elapsed = now - self._start
        free = elapsed - (lag.stalled(now) - self._stalled)
        loop = asyncio.get_running_loop()
        if free >= self._seconds or elapsed >= self._at_most:
            self._handle = None
            self.inconclusive = free < self._seconds
            if self._on_expire is not None:
                self._on_expire()
            self._timeout.reschedule(loop.time())  # expires now
            return
        wait = min(self._seconds - free, self._at_most - elapsed)
        self._handle = loop.call_later(wait, self._check)
