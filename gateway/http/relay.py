"""Relaying an engine's stream to the client as server-sent events, event by event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from engines import EngineError, PooledStream, StreamEvent, is_usage_chunk
from gateway.accounting.exchange import Outcome
from gateway.http.disconnect import DisconnectWatch
from gateway.http.errors import error_event, from_engine_error

__all__ = ["DONE", "SSE_HEADERS", "RelayEnd", "StreamRelay"]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # proxies such as nginx must not buffer the stream
]
DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class RelayEnd:
    outcome: Outcome
    first_event_at: float | None  # monotonic time the first event went out
    error: EngineError | None


class StreamRelay(Response):
    """An ASGI response over an open engine stream (its first event already in hand).

    Never buffers the whole stream; drops the engine's usage chunk unless the client asked for it
    (the gateway always asks the engine for usage); rewrites the engine's model name to the public
    one, and its id to `reply_id` when it differs (vLLM makes it of our x-request-id: one comparison a
    stream; an engine with ids of its own costs one replace a read), in every event in hand at once
    unless a usage chunk is among them; on client disconnect closes the
    upstream request at once; on engine failure sends one well-formed SSE error event and ends.
    `on_end` is called exactly once, in every case.
    """

    def __init__(
        self,
        stream: PooledStream,
        *,
        include_usage: bool,
        reply_id: str | None,
        model_rewrite: tuple[bytes, bytes] | None,
        headers: list[tuple[bytes, bytes]],
        on_end: Callable[[RelayEnd], Awaitable[None]],
        on_usage: Callable[[dict[str, Any]], bytes] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = [*SSE_HEADERS, *headers]
        self._stream = stream
        self._include_usage = include_usage
        self._reply_id = reply_id
        self._rewrite = model_rewrite
        self._on_end = on_end
        self._on_usage = on_usage  # rewrites the final usage chunk (to add the cost), when set

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = DisconnectWatch(receive)
        outcome = Outcome.OK
        error: EngineError | None = None
        first_event_at: float | None = None
        stream = self._stream
        unchecked_id = self._reply_id  # compared with the first event's id, once
        id_rewrite: tuple[bytes, bytes] | None = None
        batch: list[bytes] = []
        ended = False  # on_end is called once, whatever happens
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            try:
                # every event in hand goes out in one write: an engine that outpaces the client (or a loop
                # that fell behind) costs one write per read, not one per token
                while True:
                    usage_chunks = stream.usage_chunks
                    if not (events := await stream.batch()):
                        break
                    if unchecked_id is not None:
                        for _, payload in events:
                            if isinstance(engine_id := payload.get("id"), str):
                                id_rewrite = _id_rewrite(engine_id, unchecked_id)
                                unchecked_id = None
                                break
                    if (usage_chunks := stream.usage_chunks - usage_chunks) == 0:
                        body = b"data: " + self._joined(events, id_rewrite) + b"\n\n"
                    elif out := self._with_usage(events, usage_chunks, id_rewrite):
                        body = b"data: " + b"\n\ndata: ".join(out) + b"\n\n"
                    else:
                        continue
                    if first_event_at is None:
                        first_event_at = time.monotonic()
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                batch.append(DONE)
            except EngineError as exc:
                outcome, error = Outcome.of_failure(exc, disconnected=False), exc
                batch.append(error_event(from_engine_error(exc)))
            watch.stop()  # from here on a disconnect changes nothing
            if first_event_at is None:
                first_event_at = time.monotonic()
            await stream.aclose()
            ended = True
            # durable before the stream ends; shielded: a shutdown must not cut the record in half
            await asyncio.shield(self._on_end(RelayEnd(outcome, first_event_at, error)))
            await send({"type": "http.response.body", "body": b"".join(batch), "more_body": False})
        except asyncio.CancelledError as exc:
            await stream.aclose()  # stops the engine's generation at once
            disconnected = watch.absorb()
            if not ended:  # a shutdown's record still goes to the journal: shielded
                outcome = Outcome.of_failure(exc, disconnected=disconnected)
                await asyncio.shield(self._on_end(RelayEnd(outcome, first_event_at, error)))
            if not disconnected:
                raise
        finally:
            watch.stop()
            await stream.aclose()

    def _joined(self, events: list[StreamEvent], id_rewrite: tuple[bytes, bytes] | None) -> bytes:
        """Events without a usage chunk as they go out, between one's `data: ` and the last one's end: as
        sent, joined and renamed all at once (a name's field can only be the event's own: inside a JSON
        string, its quotes would be escaped)."""
        joined = b"\n\ndata: ".join([data for data, _ in events])
        if id_rewrite is not None:
            joined = joined.replace(*id_rewrite)
        return joined.replace(*self._rewrite) if self._rewrite is not None else joined

    def _with_usage(
        self, events: list[StreamEvent], usage_chunks: int, id_rewrite: tuple[bytes, bytes] | None
    ) -> list[bytes]:
        """The data of events among which are `usage_chunks` usage chunks: the usage chunk is dropped unless
        the client asked for it, and then given its cost. Usage comes last: the events before the first
        usage chunk are joined and renamed at once, the others one by one."""
        cut = len(events)
        while usage_chunks and cut:
            cut -= 1
            usage_chunks -= is_usage_chunk(events[cut][1])
        out = [self._joined(events[:cut], id_rewrite)] if cut else []
        rewrite = self._rewrite
        for data, payload in events[cut:]:
            if id_rewrite is not None:
                data = data.replace(id_rewrite[0], id_rewrite[1], 1)
            if is_usage_chunk(payload):
                if not self._include_usage:
                    continue  # the usage chunk the gateway asked for on its own behalf
                if self._on_usage is not None:
                    out.append(self._on_usage(payload))
                    continue
            if rewrite is not None:
                data = data.replace(rewrite[0], rewrite[1], 1)
            out.append(data)
        return out


def _id_rewrite(engine_id: str, reply_id: str) -> tuple[bytes, bytes] | None:
    """(engine's `"id":` field, ours) as the engine encodes JSON (compact, as the model rewrite assumes)."""
    if engine_id == reply_id:
        return None
    return b'"id":' + orjson.dumps(engine_id), b'"id":' + orjson.dumps(reply_id)
