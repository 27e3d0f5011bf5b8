"""The streams' share of a turn of the event loop (engines.turns): driven by a clock of the test's own, turns
counted by the loop itself, no wall-clock assertion."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import pytest

from engines.pooled_stream import PooledStream
from engines.turns import Turns
from tests.engines.test_pool import Clock, FakeStream  # the clock moves only when a test's fake work says so


class TurnCounter:
    """Counts the loop's turns: a callback that schedules itself again runs once a turn."""

    def __init__(self) -> None:
        self.turn = 0
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_soon(self._next)

    def _next(self) -> None:
        self.turn += 1
        self._handle = asyncio.get_running_loop().call_soon(self._next)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


async def test_a_turn_is_spent_once_its_budget_has_passed_and_a_new_turn_starts_afresh() -> None:
    clock = Clock()
    turns = Turns(0.002, streams=1, clock=clock)
    assert not turns.spent()  # the first stream of a turn always runs: its clock starts
    clock.now += 0.0015
    assert not turns.spent()
    clock.now += 0.001
    assert turns.spent()  # 2.5 ms into a turn whose share is 2 ms
    await turns.next_turn()
    assert turns.deferred == 1
    assert not turns.spent()  # a new turn: its clock starts now
    clock.now += 0.0021
    assert turns.spent()


async def test_streams_woken_in_one_turn_run_within_its_share_in_order_and_the_rest_in_the_next() -> None:
    """Ten streams woken at once, each working 1 ms on a turn's share of 2.5 ms: three run in a turn (the
    first, and two that find some of the share left), every one of them in the end; and nothing waits
    without a turns object."""
    clock = Clock()
    turns = Turns(0.0025, streams=1, clock=clock)
    assert await turns_they_ran_in(turns, clock, work_s=0.001) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert turns.deferred == 7 + 4 + 1  # each stream that waited, once for each turn it waited
    assert await turns_they_ran_in(None, clock, work_s=0.001) == [0] * 10


async def test_a_turn_carries_its_floor_of_streams_however_long_their_reads() -> None:
    """Streams whose reads each take longer than the whole share: four run in a turn all the same, with a
    floor of four."""
    clock = Clock()
    turns = Turns(0.001, streams=4, clock=clock)
    assert await turns_they_ran_in(turns, clock, work_s=0.005) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


async def test_a_streams_first_read_never_waits_for_a_turn() -> None:
    """The same ten streams, of which the sixth has just begun (its first read: its first token): it runs in
    the first turn, although the share is spent; the streams behind it each wait their turn as before, in
    order."""
    clock = Clock()
    turns = Turns(0.0025, streams=1, clock=clock)
    ran = await turns_they_ran_in(turns, clock, work_s=0.001, first={5})
    assert ran == [0, 0, 0, 1, 1, 0, 1, 2, 2, 2]


async def test_a_pooled_stream_takes_its_first_read_at_once_and_then_its_turn() -> None:
    """A stream that begins in a turn whose share is spent: its first event is handed over in that turn, its
    second waits for the next; a stream's first batch the same."""
    clock = Clock()
    turns = Turns(0.001, streams=1, clock=clock)
    assert not turns.spent()  # a turn's first stream...
    clock.now += 0.01  # ... took the whole share
    unused: Any = None  # its pool and replica: asked nothing until the stream is closed
    stream = PooledStream(unused, unused, FakeStream("http://a", 2), turns)
    await anext(stream)
    assert turns.deferred == 0
    await anext(stream)
    assert turns.deferred == 1  # its second read waited a turn
    clock.now += 0.01  # this turn's share spent too
    batched = PooledStream(unused, unused, FakeStream("http://a", 3), turns)
    assert len(await batched.batch()) == 3
    assert turns.deferred == 1


async def turns_they_ran_in(
    turns: Turns | None, clock: Clock, work_s: float, first: Collection[int] = ()
) -> list[int]:
    """Ten streams woken by one read, each working `work_s` on `clock`, those in `first` on their first read:
    the turn each ran in, counted from the first; the others must have run in the order they were woken."""
    counter = TurnCounter()
    ran: list[tuple[int, int]] = []  # (stream, turn)
    woken = asyncio.get_running_loop().create_future()

    async def stream(number: int) -> None:
        await woken  # one engine read wakes them all in the same turn
        if turns is not None:
            while turns.spent(number in first):
                await turns.next_turn()
        ran.append((number, counter.turn))
        clock.now += work_s  # its events handled

    tasks = [asyncio.create_task(stream(number)) for number in range(10)]
    await asyncio.sleep(0)  # every task waits for the read
    counter.start()
    woken.set_result(None)
    await asyncio.gather(*tasks)
    counter.stop()
    waited = [number for number, _ in ran if number not in first]
    assert waited == sorted(waited)
    turn_of = dict(ran)
    return [turn_of[number] - ran[0][1] for number in range(10)]


async def test_a_stream_alone_never_waits() -> None:
    clock = Clock()
    turns = Turns(0.001, streams=1, clock=clock)  # no floor: alone, it is still the first
    for _ in range(5):
        assert not turns.spent()
        clock.now += 0.5  # however long its events take, it is the turn's first
        await asyncio.sleep(0)
    assert turns.deferred == 0


def test_a_share_must_be_positive() -> None:
    with pytest.raises(ValueError, match="budget_s"):
        Turns(0, streams=1)
