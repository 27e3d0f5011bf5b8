"""The event loop's turns shared among streams: a burst of tokens does not hold up the next request.

An engine's decode step brings a token of every stream in its batch at once, and a busy gateway relays them
all in one turn of its event loop before it polls its sockets again. A request that arrives meanwhile waits
out the whole burst, and so does the door's refusal of it (written as its headers are read,
gateway.http.connections). `Turns` caps what streams take of a turn: a stream that its engine woke asks
`spent()` before its events are handled, and once `budget_s` has passed since the first stream of this turn
ran, and at least `streams` streams have run in it, it waits for the next turn (`await next_turn()`), after
the loop has polled its sockets.

The floor of streams a turn carries is what keeps this free where there is no burst to cut: a few streams
whose reads are each long (an engine that outpaces the client brings tens of kilobytes a read) would
otherwise run one a turn, and the turns added cost more than there is to gain. Measured (bench/overhead.py,
ten 1,000-chunk streams from an instant engine, production configuration, a slow evening): 13.4 us of CPU a
relayed chunk one stream a turn, 11.1 with no turns at all, 11.2 with the floor.

Nothing is dropped, reordered or added but a count a read (and a clock read past the floor) and, for a stream
that waits, a turn of the loop: those that waited are first in the next turn's line, ahead of the streams
woken since (asyncio runs a turn's callbacks in the order they were scheduled). The first stream of a turn
always runs, so every turn makes progress, and a stream alone never waits.

Nor does a stream's first read: it carries the stream's first token, and a stream that has just begun would
otherwise queue behind every stream of the burst, through as many turns as they fill. Streams that enter
together (as many as a burst of others, ending together, made room for) lost most of their time to first
token there. Measured (bench/overload.py at twice the load, three runs each way, docs/benchmarks.md): the
gateway's time to first token p99 39-71 ms against 96-126.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["Turns"]


class Turns:
    """The streams' share of each turn of the running loop: `budget_s` of the clock from the first stream that
    runs in it, and at least `streams` streams."""

    __slots__ = ("_clock", "_ran", "_started", "budget_s", "deferred", "streams")

    def __init__(
        self, budget_s: float, *, streams: int, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        if budget_s <= 0:
            raise ValueError(f"budget_s must be positive, not {budget_s!r}")
        self.budget_s = budget_s
        self.streams = streams
        self._clock = clock
        self._ran = 0  # streams that ran in this turn (0: none yet, the turn's clock is not running)
        self._started = 0.0
        self.deferred = 0  # a stream waited for the next turn, this many times (for metrics)

    def spent(self, first: bool = False) -> bool:
        """Whether this turn's share is spent: the stream asking waits for the next (`next_turn`). A stream's
        `first` read never waits (it is counted): it is the stream's time to first token, the promise of the
        fast tier, and lets each stream behind it wait one read's work longer."""
        ran = self._ran
        if ran == 0:  # the first stream of a turn: its clock starts, and stops with the turn
            self._started = self._clock()
            # scheduled now, it runs first in the next turn: before any stream that waits for it
            asyncio.get_running_loop().call_soon(self._turned)
        elif ran >= self.streams and not first and self._clock() - self._started > self.budget_s:
            return True  # the clock is read only past the floor
        self._ran = ran + 1
        return False

    async def next_turn(self) -> None:
        """Wait for the loop's next turn (after it polls its sockets)."""
        self.deferred += 1
        await asyncio.sleep(0)

    def _turned(self) -> None:
        self._ran = 0
