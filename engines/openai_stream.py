"""A streamed response of an OpenAI-compatible engine, read as server-sent events: decoded once each, a read's
worth at a time, with its usage and a tally of what it generated."""

from __future__ import annotations

import asyncio
import errno
from collections import deque
from collections.abc import Awaitable, Callable

import httpx
import orjson

from engines._exceptions import EngineFailed, EngineTimeout, LocalOverload
from engines.client import StreamEvent
from engines.sse import SSEDecoder
from engines.transport import ChunkReader
from engines.usage import StreamTally, Usage, is_usage_chunk

__all__ = ["OpenAICompatStream", "local_shortage"]

_DONE = b"[DONE]"
# errors of the operating system that say this process ran short, whatever the engine's state
_LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


class OpenAICompatStream:
    """The events of one streamed response, its usage (the latest reported wins) and a tally of
    what it generated. Iterating ends at `[DONE]`; a body that ends before it raises EngineFailed.

    `batch()` hands over every event already in hand at once (the relay's way: one write for all of them);
    iterating hands them over one by one. Either way each event is decoded once, here."""

    def __init__(self, replica: str, response: httpx.Response, idle_s: float) -> None:
        self.replica = replica
        self.usage: Usage | None = None
        self.usage_chunks = 0  # events with usage and no choices (the usage chunk the gateway asks for)
        self.tally = StreamTally()
        self._response = response
        body = response.stream
        # this package's transport reads what has arrived, joined, under one deadline timer per connection;
        # any other transport (tests swap it) is read through httpx, each read under a timeout of its own
        self._reader = body.reads() if isinstance(body, ChunkReader) else _timed_reader(response)
        self._idle_s = idle_s
        self._decoder = SSEDecoder()
        self._pending: deque[bytes] = deque()
        self._finished = False  # the body ended
        self._done = False  # [DONE] was read

    async def prime(self) -> None:
        """Read until the first event is in hand (or the stream ends)."""
        while not self._pending and not self._finished:
            await self._read(None)  # the caller's first-token deadline bounds this wait, not idle_s

    def __aiter__(self) -> OpenAICompatStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if not self._pending:
            await self._fill()
        data = self._pending.popleft()
        if data == _DONE:
            self._done = True
            self._pending.clear()
            raise StopAsyncIteration
        event = self._event(data)
        self.tally.observe(event[1])
        return event

    async def batch(self) -> list[StreamEvent]:
        """Every event in hand (waiting for one if none is), in order; [] once the stream has ended. An event
        that fails (not JSON, an engine's error) is raised by the call after the events before it."""
        pending = self._pending
        while not pending:  # as _fill, inlined: every level of coroutines costs each read of a paced stream
            if self._done:
                return []
            if self._finished:
                raise EngineFailed("the engine's stream ended without [DONE]", replica=self.replica)
            await self._read(self._idle_s)
        datas = list(pending)
        pending.clear()
        if _DONE in datas:  # the end: what follows it is ignored
            self._done = True
            del datas[datas.index(_DONE) :]
        events: list[StreamEvent] = []
        append, event = events.append, self._event
        try:
            for data in datas:
                append(event(data))
        except EngineFailed:
            if not events:
                raise
            # raised by the next call, after these went out
            pending.extend(datas[len(events) :])
            if self._done:
                self._done = False
                pending.append(_DONE)
        self.tally.observe_all([payload for _, payload in events])
        return events

    async def aclose(self) -> None:
        await self._response.aclose()

    async def _fill(self) -> None:
        """Wait until an event is pending; StopAsyncIteration after [DONE]."""
        while not self._pending:
            if self._done:
                raise StopAsyncIteration
            if self._finished:
                raise EngineFailed("the engine's stream ended without [DONE]", replica=self.replica)
            await self._read(self._idle_s)

    async def _read(self, wait_s: float | None) -> None:
        try:
            chunk = await self._reader(wait_s)
        except (TimeoutError, httpx.TimeoutException):
            raise EngineTimeout("the engine stalled mid-stream", replica=self.replica, phase="idle") from None
        except httpx.TransportError as exc:
            if local_shortage(exc):
                message = f"the gateway could not read the stream: {exc}"
                raise LocalOverload(message, replica=self.replica) from exc
            raise EngineFailed(f"the engine's stream broke: {exc}", replica=self.replica) from exc
        if chunk is None:
            self._finished = True
            await self._response.aclose()  # the whole body was read: its connection goes back to the pool
            return
        self._pending.extend(self._decoder.feed(chunk))

    def _event(self, data: bytes) -> StreamEvent:
        """An event decoded and checked, its usage taken; the caller tallies it (a whole read at once)."""
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise EngineFailed("the engine sent an event that is not JSON", replica=self.replica) from None
        if not isinstance(payload, dict):
            raise EngineFailed("the engine sent an event that is not an object", replica=self.replica)
        if "error" in payload and "choices" not in payload:
            error = payload["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise EngineFailed(
                f"the engine failed mid-stream: {message}", replica=self.replica, reported=str(message)
            )
        if "usage" in payload:
            if usage := payload["usage"]:
                self.usage = Usage.from_payload(usage) or self.usage
            self.usage_chunks += is_usage_chunk(payload)
        return data, payload


def _timed_reader(response: httpx.Response) -> Callable[[float | None], Awaitable[bytes | None]]:
    raw = response.aiter_raw()

    async def read(wait_s: float | None) -> bytes | None:
        async with asyncio.timeout(wait_s):
            return await anext(raw, None)

    return read


def local_shortage(exc: httpx.TransportError) -> bool:
    """Whether the transport failed for a shortage of this process: no free connection in its own pool, or an
    operating-system error in the chain of causes that the engine's state cannot explain."""
    if isinstance(exc, httpx.PoolTimeout):
        return True
    cause = exc.__cause__ or exc.__context__
    for _ in range(8):  # chains are short; the bound guards against a cycle
        if cause is None:
            return False
        if isinstance(cause, OSError) and cause.errno in _LOCAL_ERRNOS:
            return True
        cause = cause.__cause__ or cause.__context__
    return False
