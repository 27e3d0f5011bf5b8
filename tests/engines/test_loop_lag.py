"""LoopLag and its deadlines; a pool that never blames a replica for its own loop's lag.

The lag is made for real: a callback that blocks the loop (time.sleep), as a saturated gateway does. What is
asserted is an outcome (expired or not, healthy or not), never a duration."""

from __future__ import annotations

import asyncio
import time

import pytest

from engines import EnginePool, EngineTimeout, PoolPolicy
from engines.loop_lag import LoopLag
from tests.engines.test_pool import Clock, FakeEngine


def test_ticks_add_their_lateness_and_an_overdue_tick_counts_before_it_runs() -> None:
    clock = Clock()
    lag = LoopLag(0.05, saturated_s=0.1, clock=clock)
    lag.expect(100.05)
    clock.now = 100.05
    assert lag.stalled() == 0 and lag.current() == 0 and not lag.saturated
    clock.now = 101.05  # the loop is stuck: the tick due a second ago has not run
    assert lag.stalled() == pytest.approx(1.0) and lag.saturated
    lag.tick(100.05, 101.05)
    assert lag.stalled() == pytest.approx(1.0) and lag.last_s == pytest.approx(1.0)
    for n in range(1, 12):  # the loop keeps up again: the recent lag fades, the stalled time stays
        lag.tick(101.05 + n * 0.05, 101.05 + n * 0.05)
    assert lag.stalled() == pytest.approx(1.0)
    assert lag.current() < 0.001 and not lag.saturated and lag.peak_s == pytest.approx(1.0)


def test_utilization_is_the_moving_average_of_the_loops_busy_share() -> None:
    clock = Clock()
    lag = LoopLag(0.05, clock=clock)
    assert lag.utilization == 0
    for n in range(1, 60):  # the loop works all the time and keeps its timers on time: no lag, but busy
        lag.tick(n * 0.05, n * 0.05, 1.0)
    assert lag.smoothed_s == 0 and lag.utilization > 0.99
    lag.tick(3.0, 3.0, 0.0)  # one idle tick barely moves it
    assert lag.utilization > 0.85
    for n in range(61, 120):
        lag.tick(n * 0.05, n * 0.05, 0.2)
    assert lag.utilization == pytest.approx(0.2, abs=0.01)
    before = lag.utilization
    lag.tick(6.0, 6.0, 7.0)  # a share past 1 (a clock's jitter) counts as 1, a tick without one not at all
    lag.tick(6.05, 6.05)
    assert lag.utilization == pytest.approx(before + 0.1 * (1 - before))


def test_busy_now_is_the_busy_share_of_the_last_few_ticks() -> None:
    clock = Clock()
    lag = LoopLag(0.05, clock=clock)
    for n in range(1, 60):
        lag.tick(n * 0.05, n * 0.05, 0.5)
    assert lag.busy_now == pytest.approx(0.5) and lag.utilization == pytest.approx(0.5, abs=0.01)
    for n in range(60, 68):  # the loop fills: the short average sees it first
        lag.tick(n * 0.05, n * 0.05, 1.0)
    assert lag.busy_now > 0.97 and lag.utilization < 0.8


def test_wait_is_the_moving_average_of_each_ticks_mean_wait() -> None:
    clock = Clock()
    lag = LoopLag(0.05, clock=clock)
    for _ in range(3):
        lag.waited(0.010)
    lag.waited(0.030)  # this tick's mean: 15 ms
    assert lag.wait_s == 0 and lag.waits == 0  # folded in at the tick, not on the request's path
    lag.tick(0.05, 0.05)
    assert lag.wait_s == pytest.approx(0.1 * 0.015)  # a tenth of the tick's mean: a moving average
    assert lag.waits == 4 and lag.waited_s == pytest.approx(0.060)  # the totals, for metrics
    for n in range(2, 80):  # every tick's requests wait 40 ms
        lag.waited(0.040)
        lag.tick(n * 0.05, n * 0.05)
    assert lag.wait_s == pytest.approx(0.040, rel=0.01)
    lag.tick(4.0, 4.0)  # no request reached an engine in this tick: what was seen fades
    assert lag.wait_s == pytest.approx(0.020, rel=0.01)
    for n in range(81, 100):
        lag.tick(n * 0.05, n * 0.05)
    assert lag.wait_s < 0.0001


async def test_the_running_lag_measures_how_busy_the_loop_is() -> None:
    lag = await started(LoopLag(0.02))
    try:
        spent = time.thread_time() + 0.6  # 0.6 s of CPU on the loop's thread, in short turns
        while time.thread_time() < spent:
            work(0.005)
            await asyncio.sleep(0)
        busy = lag.utilization
        await asyncio.sleep(1.0)  # idle: some 50 ticks (7 would halve the average)
        # a busy machine may give this thread less than the wall clock: the shares compare, not their size
        assert busy > 0.1 and lag.utilization < busy / 2, (busy, lag.utilization)
    finally:
        await lag.aclose()


def work(seconds: float) -> None:
    """Keep the loop's thread on the CPU (a sleep blocks the loop but is no work)."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def stall(seconds: float) -> None:
    """Block the loop, as a saturated gateway's request handling does."""
    time.sleep(seconds)


async def hops(count: int) -> None:
    """Work that needs the loop a few times (a reply read off a socket, parsed, handed over)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def started(lag: LoopLag) -> LoopLag:
    lag.start()
    await asyncio.sleep(0)  # its first step has run: its first tick is due
    assert lag._expected is not None
    return lag


async def stuck_then_answered() -> None:
    """Work that needs the loop a few times, while other work blocks the loop for 2 s."""
    asyncio.get_running_loop().call_soon(stall, 2.0)
    await hops(5)


async def never_free() -> None:
    while True:  # the loop never frees up
        stall(0.3)
        await asyncio.sleep(0)


async def test_a_deadline_does_not_expire_for_the_loops_own_lag() -> None:
    lag = await started(LoopLag(0.05))
    try:
        # a plain timeout expires: the loop was stuck past it before the work could finish
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await stuck_then_answered()
        async with lag.deadline(1.0) as deadline:
            await stuck_then_answered()
        assert not deadline.inconclusive
    finally:
        await lag.aclose()


async def test_a_deadline_expires_for_a_dependency_that_is_slow_while_the_loop_is_free() -> None:
    lag = await started(LoopLag(0.05))
    try:
        with pytest.raises(TimeoutError):
            # a wall-clock bound far off: however busy the machine, the deadline expires on free time
            async with lag.deadline(0.2, at_most=60.0) as deadline:
                await asyncio.Event().wait()  # never answers
        assert not deadline.inconclusive  # evidence about the dependency
    finally:
        await lag.aclose()


async def test_a_loop_stuck_past_at_most_expires_the_deadline_inconclusively() -> None:
    lag = await started(LoopLag(0.05))
    try:
        with pytest.raises(TimeoutError):
            async with lag.deadline(0.5, at_most=1.0) as deadline:
                await never_free()
        assert deadline.inconclusive  # it could not run on time: says nothing of the dependency
    finally:
        await lag.aclose()


class SlowHealth(FakeEngine):
    """Its /health answers at once, but reading the answer takes the loop a few turns, and the loop is
    stuck (by other work) as the check starts; or it never answers (`hang`)."""

    def __init__(self, url: str, *, hang: bool = False) -> None:
        super().__init__(url)
        self.hang = hang

    async def health(self) -> bool:
        if self.hang:
            await asyncio.Event().wait()
        asyncio.get_running_loop().call_soon(stall, 1.5)
        await hops(5)
        return True


async def test_a_health_check_our_busy_loop_made_late_does_not_eject_a_healthy_replica() -> None:
    policy = PoolPolicy(health_timeout_s=0.5, health_interval_s=5.0)
    blind = EnginePool("fast", [SlowHealth("a")], policy)
    await blind.check_health()
    assert blind.replicas[0].healthy is False  # without the lag: the failure mode of issue 19

    lag = await started(LoopLag(0.05))
    try:
        pool = EnginePool("fast", [SlowHealth("a")], policy, lag=lag)
        await pool.check_health()
        assert pool.replicas[0].healthy is True and pool.ready
    finally:
        await lag.aclose()


async def test_a_replica_that_served_real_requests_a_moment_ago_is_not_failed_by_one_slow_check() -> None:
    clock = Clock()
    policy = PoolPolicy(health_timeout_s=0.05, health_interval_s=5.0)
    serving, silent = SlowHealth("serving", hang=True), SlowHealth("silent", hang=True)
    pool = EnginePool("fast", [serving, silent], policy, clock=clock)
    pool.replicas[0].answered_at = clock.now - 1.0  # it answered a request a second ago
    await pool.check_health()
    assert [replica.healthy for replica in pool.replicas] == [None, False]
    clock.now += 10.0  # and nothing since: now the timeout is evidence
    await pool.check_health()
    assert [replica.healthy for replica in pool.replicas] == [False, False]


async def test_an_engine_timeout_while_our_loop_is_saturated_is_not_held_against_the_replica() -> None:
    def timeout(url: str) -> EngineTimeout:
        return EngineTimeout("no first token in time", replica=url, phase="first_token")

    clock = Clock()
    lag = LoopLag(0.05, saturated_s=0.1, clock=clock)
    a = FakeEngine("a", [timeout("a")] * 4)
    pool = EnginePool("fast", [a], PoolPolicy(eject_after_failures=2, max_attempts=1), clock=clock, lag=lag)
    lag.expect(clock.now)
    clock.now += 1.0  # the loop is a second late
    for _ in range(2):
        with pytest.raises(EngineTimeout):
            await pool.complete("/x", b"{}", request_id="r")
    assert pool.replicas[0].failures == 0 and pool.replicas[0].ejected_until == 0
    lag.tick(clock.now - 1.0, clock.now)
    for _ in range(12):  # the loop keeps up again: a timeout now is the replica's
        lag.tick(clock.now, clock.now)
    for _ in range(2):
        with pytest.raises(EngineTimeout):
            await pool.complete("/x", b"{}", request_id="r")
    assert pool.replicas[0].failures == 2 and pool.replicas[0].ejected_until > clock.now
