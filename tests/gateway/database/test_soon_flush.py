"""SoonFlush: the settlements' courier. A run goes as soon as the loop is free, or, told to gather while other
requests are in flight, waits its window for their settlements to join it."""

from __future__ import annotations

import asyncio

from gateway.database.redis_link import SoonFlush

LONG_S = 60.0  # a window no test waits out: what must not have run by then has not run


class Flushes:
    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self) -> None:
        self.runs += 1


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_request_alone_is_settled_at_once_however_long_the_window() -> None:
    flushes = Flushes()
    flusher = SoonFlush(LONG_S, flushes, only_if=lambda: False)  # nobody else in flight
    landed = flusher.kick()
    async with asyncio.timeout(10):
        await landed
    assert flushes.runs == 1


async def test_with_others_in_flight_every_kick_of_the_window_goes_in_one_run() -> None:
    flushes, others = Flushes(), [True]
    flusher = SoonFlush(LONG_S, flushes, only_if=lambda: others[0])
    first = flusher.kick()
    await turns(5)
    second = flusher.kick()  # a settlement made meanwhile joins the waiting run
    assert second is first and flushes.runs == 0 and not first.done()
    await flusher.stop()  # a shutdown does not wait the window out: the owner flushes itself
    assert first.done() and flushes.runs == 0
    others[0] = False  # the next run, alone again, goes at once
    async with asyncio.timeout(10):
        await flusher.kick()
    assert flushes.runs == 1
