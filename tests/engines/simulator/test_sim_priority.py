"""The simulator's waiting requests leave their queue by vLLM's `priority` (lower first), then by arrival:
a fast-tier request (priority 0) overtakes deliberations (10) queued before it. Driven by releases."""

from __future__ import annotations

import asyncio

from engines.simulator.latency import Scheduler


async def test_the_waiting_leave_by_priority_then_by_arrival() -> None:
    scheduler = Scheduler(("m",), 1, 1_000_000)
    await scheduler.acquire("m")  # the one running slot, taken
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        await scheduler.acquire("m", priority)
        order.append(name)
        scheduler.release("m")

    waiting = []
    for name, priority in (("deliberate 1", 10), ("deliberate 2", 10), ("fast 1", 0), ("fast 2", 0)):
        waiting.append(asyncio.create_task(wait(name, priority)))
        await asyncio.sleep(0)  # its first step: it is queued
    assert scheduler.waiting["m"] == 4
    scheduler.release("m")
    await asyncio.gather(*waiting)
    assert order == ["fast 1", "fast 2", "deliberate 1", "deliberate 2"]
    assert (scheduler.running["m"], scheduler.waiting["m"]) == (0, 0)


async def test_a_waiter_that_gives_up_leaves_the_queue() -> None:
    scheduler = Scheduler(("m",), 1, 1_000_000)
    await scheduler.acquire("m")
    gone = asyncio.create_task(scheduler.acquire("m", 0))
    stays = asyncio.create_task(scheduler.acquire("m", 10))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert scheduler.waiting["m"] == 1
    scheduler.release("m")
    await stays
    assert (scheduler.running["m"], scheduler.waiting["m"]) == (1, 0)
