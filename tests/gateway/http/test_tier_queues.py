"""Priority per tier: each tier holds at most its share of the door's limit; past it, its requests wait in
its queue (premium before standard, then by arrival) out of the door's count, and are shed at its deadline
or when the queue is full. Driven by events (releases), never by sleeping."""

from __future__ import annotations

import asyncio

import pytest

from engines import LoopLag
from gateway.http.door import Door
from gateway.http.tier_queues import Shed, Slot, TierQueues


def queues_for(
    share: float = 0.8, *, max_wait_s: float = 60.0, max_queued: int = 8
) -> tuple[Door, TierQueues]:
    door = Door(10)
    return door, TierQueues(
        door, {"deliberate": share}, {"deliberate": max_wait_s, "fast": 0.5}, max_queued=max_queued
    )


async def admitted(door: Door, queues: TierQueues, tier: str, klass: str = "standard") -> Slot | None:
    """As the door and the handler do: counted by the door, then a slot of the tier."""
    assert door.admit()
    return await queues.enter(tier, klass)


async def waiting(queues: TierQueues, tier: str, count: int) -> None:
    await asyncio.sleep(0)  # the task just started has taken its first step: it waits in the queue
    assert queues.queued()[tier].length == count


async def test_deliberations_hold_at_most_their_share_and_the_fast_tier_always_has_room() -> None:
    door, queues = queues_for()
    held = [await admitted(door, queues, "deliberate") for _ in range(8)]
    assert all(slot is not None for slot in held) and queues.queued()["deliberate"].in_flight == 8
    # counted by their tier now, not by the door's (adaptive) limit; still against its ceiling
    assert (door.in_flight, door.held_elsewhere) == (0, 8)
    ninth = asyncio.create_task(admitted(door, queues, "deliberate"))
    await waiting(queues, "deliberate", 1)
    assert (door.in_flight, door.held_elsewhere) == (0, 8)  # a waiting request is counted by nobody
    fast = [await admitted(door, queues, "fast") for _ in range(2)]
    assert fast == [None, None] and door.in_flight == 2  # the fast tier is not queued: the door's limit
    assert not door.admit()  # the ceiling: 2 + 8 of 10
    assert not ninth.done()
    first = held[0]
    assert first is not None
    queues.release(first)  # a deliberation ended (gateway.http.dispatch): the waiter goes in
    slot = await ninth
    assert slot is not None and slot.tier == "deliberate"
    assert (door.in_flight, door.held_elsewhere) == (2, 8)
    assert queues.queued()["deliberate"] == queues.queued()["deliberate"].__class__(0, 8, 1, slot.waited_s, 0)


async def test_premium_waiters_go_first_then_by_arrival() -> None:
    door, queues = queues_for(0.1)  # the deliberate tier's share: 1 slot of 10
    first = await admitted(door, queues, "deliberate")
    assert first is not None
    order: list[str] = []

    async def wait(name: str, klass: str) -> None:
        slot = await admitted(door, queues, "deliberate", klass)
        order.append(name)
        assert slot is not None
        queues.release(slot)

    names = [("s1", "standard"), ("p1", "premium"), ("s2", "standard"), ("p2", "premium")]
    tasks = []
    for count, (name, klass) in enumerate(names, start=1):
        tasks.append(asyncio.create_task(wait(name, klass)))
        await waiting(queues, "deliberate", count)
    queues.release(first)
    await asyncio.gather(*tasks)
    assert order == ["p1", "p2", "s1", "s2"]
    assert (door.in_flight, door.held_elsewhere) == (0, 0) and queues.queued()["deliberate"].in_flight == 0


async def test_a_request_that_would_wait_past_its_deadline_is_shed() -> None:
    door, queues = queues_for(0.1, max_wait_s=0.05)
    held = await admitted(door, queues, "deliberate")
    with pytest.raises(Shed) as shed:
        await admitted(door, queues, "deliberate")
    assert shed.value.reason == "deadline" and shed.value.retry_after_s >= 1
    # the shed one counted by the door again: its middleware counts it out at its end
    assert (door.in_flight, door.held_elsewhere) == (1, 1)
    door.leave()
    assert queues.queued()["deliberate"].shed == 1 and queues.queued()["deliberate"].length == 0
    assert held is not None
    queues.release(held)
    assert queues.queued()["deliberate"].in_flight == 0 and (door.in_flight, door.held_elsewhere) == (0, 0)


async def test_a_full_queue_sheds_at_once() -> None:
    door, queues = queues_for(0.1, max_queued=1)
    await admitted(door, queues, "deliberate")
    queued = asyncio.create_task(admitted(door, queues, "deliberate"))
    await waiting(queues, "deliberate", 1)
    with pytest.raises(Shed) as shed:
        await admitted(door, queues, "deliberate")
    assert shed.value.reason == "queue_full"
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert queues.queued()["deliberate"].length == 0
    # each counted once: the one holding its slot by its tier, the two others by the door
    assert (door.in_flight, door.held_elsewhere) == (2, 1)


async def test_the_share_follows_the_doors_limit() -> None:
    door, queues = queues_for()
    assert queues.cap("deliberate") == 8
    door.limit = 5  # the adaptive limit backed off
    assert queues.cap("deliberate") == 4
    door.limit = 1
    assert queues.cap("deliberate") == 1  # never none


def watching(target_utilization: float = 1.0) -> tuple[LoopLag, Door, TierQueues]:
    """A door of 10 and a deliberate share of 0.8 whose cap is also an AIMD limit on a loop's lag (ticked by
    hand) and, below 1, its utilization."""
    lag = LoopLag(0.05, clock=lambda: 100.0)
    door = Door(10)
    queues = TierQueues(
        door,
        {"deliberate": 0.8},
        {"deliberate": 60.0},
        lag=lag,
        target_lag_s=0.02,
        target_utilization=target_utilization,
    )
    return lag, door, queues


async def test_the_loops_lag_squeezes_the_queued_tier_before_the_doors_limit() -> None:
    lag, door, queues = watching()
    held = [await admitted(door, queues, "deliberate") for _ in range(8)]
    assert all(held) and queues.cap("deliberate") == 8
    lag.tick(0.0, 0.5)  # the loop half a second late: its moving average well past the target
    assert queues.cap("deliberate") == 7  # 90% of the 8 in flight; the door's limit stays
    assert door.limit == 10
    waiter = asyncio.create_task(admitted(door, queues, "deliberate"))
    await asyncio.sleep(0)
    assert queues.queued()["deliberate"].length == 1
    first = held[0]
    assert first is not None
    queues.release(first)  # 7 in flight: at the squeezed cap, so the waiter still waits
    await asyncio.sleep(0)
    assert queues.queued()["deliberate"].length == 1 and not waiter.done()
    assert [await admitted(door, queues, "fast") for _ in range(3)] == [None] * 3  # the fast tier: the door's
    second = held[1]
    assert second is not None
    queues.release(second)  # 6 in flight: under the cap, the waiter goes in
    assert await waiter is not None
    assert queues.queued()["deliberate"].in_flight == 7 and (door.in_flight, door.held_elsewhere) == (3, 7)


async def test_a_full_loop_holds_the_queued_tier_where_it_is() -> None:
    lag, door, queues = watching(target_utilization=0.8)
    held = [await admitted(door, queues, "deliberate") for _ in range(5)]
    assert all(held) and queues.cap("deliberate") == 8
    while lag.busy_now < 0.97:  # every turn of the loop busy, none late: full, the long average still under
        lag.tick(0.0, 0.0, 1.0)
    assert lag.utilization < 0.8 * 0.9
    assert queues.cap("deliberate") == 5  # held at the 5 in flight: a sixth waits
    waiter = asyncio.create_task(admitted(door, queues, "deliberate"))
    await waiting(queues, "deliberate", 1)
    first = held[0]
    assert first is not None
    queues.release(first)  # one ends: its place goes to the waiter
    assert await waiter is not None
