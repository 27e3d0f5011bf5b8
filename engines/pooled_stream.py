"""A stream from a pool's replica that tells its pool when it ends, and how (passive health), and waits its
turn of the loop when a burst of streams has spent it (engines.turns), but for its first read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engines._exceptions import EngineError
from engines.client import EngineStream, StreamEvent
from engines.turns import Turns
from engines.usage import StreamTally, Usage

if TYPE_CHECKING:
    from engines.pool import EnginePool, Replica

__all__ = ["PooledStream"]


class PooledStream:
    """An engine stream that tells its pool when it ends, and how. With `turns`, what it brings is handed over
    only while this turn of the loop has some of the streams' share left, else in the next."""

    __slots__ = ("_closed", "_ended", "_error", "_first", "_pool", "_stream", "_turns", "replica")

    def __init__(
        self, pool: EnginePool, replica: Replica, stream: EngineStream, turns: Turns | None = None
    ) -> None:
        self._pool = pool
        self.replica = replica
        self._stream = stream
        self._turns = turns
        self._error: EngineError | None = None
        self._closed = False
        self._ended = False  # read to its end: closed before that, the engine aborts it
        self._first = True  # its first read is still to come: it never waits for a turn (engines.turns)

    @property
    def usage(self) -> Usage | None:
        return self._stream.usage

    @property
    def usage_chunks(self) -> int:
        return self._stream.usage_chunks

    @property
    def tally(self) -> StreamTally:
        return self._stream.tally

    def __aiter__(self) -> PooledStream:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            event = await self._stream.__anext__()
        except EngineError as exc:
            self._error = exc
            raise
        except StopAsyncIteration:
            self._ended = True
            raise
        if (turns := self._turns) is not None:
            while turns.spent(self._first):
                await turns.next_turn()
            self._first = False
        return event

    async def batch(self) -> list[StreamEvent]:
        try:
            events = await self._stream.batch()
        except EngineError as exc:
            self._error = exc
            raise
        if not events:
            self._ended = True
        elif (turns := self._turns) is not None:
            while turns.spent(self._first):
                await turns.next_turn()
            self._first = False
        return events

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._stream.aclose()
        finally:
            self._pool.stream_closed(self.replica, self._error, ended=self._ended)
