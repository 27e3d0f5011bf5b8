"""Serving a job as a server-sent-events stream: one event per choice per engine step."""

from __future__ import annotations

import asyncio
from typing import Any

from engines.simulator.asgi import Exchange, run_until_disconnect
from engines.simulator.engine import Job
from engines.simulator.errors import SimulatedDrop
from engines.simulator.responses import DONE, ChunkEncoder

__all__ = ["EventStream", "serve_stream"]

_SSE_HEADERS = ((b"cache-control", b"no-cache"),)


class EventStream:
    """Buffers events and writes them when the job is about to wait (or ends), so a stream with
    no latency costs one write, not one per token. Drops the connection after `die_after` events."""

    __slots__ = ("_buffer", "_die_after", "_exchange", "_sent")

    def __init__(self, exchange: Exchange, die_after: int | None) -> None:
        self._exchange = exchange
        self._die_after = die_after
        self._buffer: list[bytes] = []
        self._sent = 0

    async def open(self) -> None:
        await self._exchange.start(200, b"text/event-stream; charset=utf-8", _SSE_HEADERS)
        if self._die_after == 0:
            raise SimulatedDrop("injected fault: die-after=0")

    async def add(self, event: bytes) -> None:
        self._buffer.append(event)
        self._sent += 1
        if self._sent == self._die_after:
            await self.flush()
            raise SimulatedDrop(f"injected fault: die-after={self._die_after}")

    async def flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            await self._exchange.write(data)

    async def end(self) -> None:
        data = b"".join(self._buffer)
        self._buffer.clear()
        await self._exchange.write(data, more=False)


async def serve_stream(
    exchange: Exchange,
    job: Job,
    encoder: ChunkEncoder,
    usage: dict[str, Any] | None,
    *,
    roles: bool,
    die_after: int | None,
) -> None:
    """Stream the job. `usage` (include_usage) adds the final usage chunk; `roles` sends each chat
    choice's opening role chunk. A client that disconnects cancels the job (vLLM counts no abort)."""
    stream = EventStream(exchange, die_after)
    if job.instant and job.try_admit_now():
        # Nothing sleeps, so nothing can be interrupted: no need to listen for a disconnect.
        try:
            await stream.open()
            await _emit(job, stream, encoder, usage, roles)
        finally:
            job.close()
        return
    await run_until_disconnect(exchange, _admit_and_emit(job, stream, encoder, usage, roles))


async def _admit_and_emit(
    job: Job, stream: EventStream, encoder: ChunkEncoder, usage: dict[str, Any] | None, roles: bool
) -> None:
    try:
        await stream.open()  # headers go out at once, as vLLM's do; tokens follow queue and prefill
        await job.admit()
        await _emit(job, stream, encoder, usage, roles)
    finally:
        job.close()


async def _emit(
    job: Job, stream: EventStream, encoder: ChunkEncoder, usage: dict[str, Any] | None, roles: bool
) -> None:
    if roles:
        for plan in job.plans:
            await stream.add(encoder.role(plan.index))
    while not job.done:
        for plan, start, size in job.next_step():
            event = encoder.tokens(plan, start, size)
            if event is not None:
                await stream.add(event)
        pause = job.pause()
        if pause > 0:
            await stream.flush()
            await asyncio.sleep(pause)
    if usage is not None:
        await stream.add(encoder.usage(usage))
    await stream.add(DONE)
    await stream.end()
