"""Client connections and the file descriptors they take: uvicorn's HTTP protocol with deadlines for a
request's headers and body and a bound on a worker's connections, and the process's open-file limit.

uvicorn (0.55) bounds only the silence between two requests of a keep-alive connection (`timeout_keep_alive`,
armed once a response is complete, cancelled by the next byte). Nothing bounds a connection that never
speaks, headers sent a line at a time, or a body that never ends: each holds a descriptor (and, for a body, a
task) for as long as the client likes. Its `limit_concurrency` answers a text/plain 503 once the headers are
in, after accepting the connection. `GatewayProtocol` adds what is missing to uvicorn's httptools protocol, at
no cost to a request that arrives in one read (the usual case: no timer is armed for it).

And it turns an inference request away as its headers arrive when the door is shut (gateway.http.door): the
503 `gateway_overloaded` the app would answer, written in the same callback that read the headers - no task,
no turn of the loop - and its body read and dropped. A refusal is then answered a turn sooner (a turn of a
saturated loop is what it waits for) and costs the loop less while it sheds thousands a second. Only on a
kept-alive HTTP/1.1 connection with no response in progress and no `expect: 100-continue` (a refusal written
ahead of an earlier response, before a body the client waits to send, or before a close would break the
exchange); any other request goes to the app, whose door decides as before.
"""

from __future__ import annotations

import asyncio
import resource
from typing import TYPE_CHECKING, Any, cast

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.http.endpoints import CHAT, COMPLETIONS, RESPONSES_PATH
from gateway.http.errors import GatewayError, gateway_overloaded
from gateway.http.request_id import assign_request_id

if TYPE_CHECKING:
    from starlette.types import Scope

    from gateway.state import GatewayState

__all__ = ["DOOR_PATHS", "GatewayProtocol", "raise_open_file_limit"]

# the raw request targets of the inference routes (gateway.routes.direct_routes), all POST, that the door
# governs; a target spelled otherwise (a query, an escape, a root path) goes to the app, whose door decides
DOOR_PATHS = frozenset(path.encode() for path in (CHAT.path, COMPLETIONS.path, RESPONSES_PATH))


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus `server.header_timeout_s`, `server.body_timeout_s` and
    `server.max_connections` (read from the gateway's state, built by the lifespan before any connection)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        gateway: GatewayState = app_state["gateway"]
        server = gateway.settings.server
        self._head_s = server.header_timeout_s
        self._body_s = server.body_timeout_s
        self._max_connections = server.max_connections
        self._door = gateway.door
        self._turned_away = False  # the request now arriving was refused at its headers: its body is dropped
        self._in_head = False  # a request's first bytes came, its headers are not complete
        self._in_body = False  # its headers are complete, its body is not
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            transport.close()  # refused as it comes: one more descriptor, for no time at all
            return
        # a connection must begin its request in time, as well as finish its headers
        self._head_timer = self.loop.call_later(self._head_s, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # armed only when a request spans reads: one that arrives whole costs no timer
        if self._in_head:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._head_s, self._head_expired)
        elif self._in_body and self._body_timer is None and not self.pipeline:
            # (a pipelined request's body is not read until the one before it is answered)
            self._body_timer = self.loop.call_later(self._body_s, self._body_expired)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._in_body = True
        if self.url in DOOR_PATHS and self._turn_away():
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._turned_away:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._turned_away:  # its answer went out with its headers; the connection is ready for the next
            self._turned_away = False
            self.on_response_complete()
            return
        super().on_message_complete()

    def _turn_away(self) -> bool:
        """Refuse the inference request whose headers just arrived, if the door is shut and it can be answered
        here; False: the app serves it (and its door decides again)."""
        cycle = self.cycle
        if (
            (cycle is not None and not cycle.response_complete)  # an earlier response is still going out
            or self.expect_100_continue
            or self.parser.get_method() != b"POST"
            or not self.parser.should_keep_alive()  # HTTP/1.0, or `connection: close`
            or self.parser.should_upgrade()
            or not self._door.turn_away()
        ):
            return False
        id_headers = assign_request_id(cast("Scope", self.scope))
        self.transport.write(_refusal(self.server_state.default_headers, id_headers))
        self._turned_away = True
        return True

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP: uvicorn's text/plain answer becomes an OpenAI error envelope, as every other is."""
        error = GatewayError(400, f"{msg} The request is not valid HTTP/1.1.", code="invalid_http_request")
        self.transport.write(_closing(400, b"Bad Request", error))
        self.transport.close()

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._in_head:  # part of a request came: say why it ends (a silent connection is just closed)
            self.transport.write(_timed_out("headers", self._head_s))
        self.transport.close()

    def _body_expired(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # the app gets `http.disconnect` for the rest, and answers nothing
            cycle.message_event.set()
            self.transport.write(_timed_out("body", self._body_s))
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None


def _refusal(default_headers: list[tuple[bytes, bytes]], id_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The door's 503 `gateway_overloaded`, as the app answers it (gateway.http.dispatch), kept alive."""
    return _written(503, b"Service Unavailable", gateway_overloaded(), [*default_headers, *id_headers])


def _timed_out(part: str, seconds: float) -> bytes:
    error = GatewayError(
        408, f"The request's {part} did not arrive within {seconds:g} s.", code="request_timeout"
    )
    return _closing(408, b"Request Timeout", error)


def _closing(status: int, reason: bytes, error: GatewayError) -> bytes:
    """A whole response, written by the protocol itself (no app, no request id), before it closes."""
    return _written(status, reason, error, [(b"connection", b"close")])


def _written(status: int, reason: bytes, error: GatewayError, headers: list[tuple[bytes, bytes]]) -> bytes:
    """`error` as a whole response the protocol writes itself: its envelope, its own headers (`retry-after`,
    say) and `headers`."""
    body = orjson.dumps(error.envelope())
    lines = [
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        % (status, reason, len(body))
    ]
    lines.extend(b"%s: %s\r\n" % (name.encode(), value.encode()) for name, value in error.headers.items())
    lines.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft limit of open files to its hard limit, and return (before, after).

    Every connection, from a client or to an engine, holds a descriptor, and the soft limit is often 1,024: a
    thousand streams would exhaust it. uvicorn's worker processes inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # a hard limit the kernel will not grant as a soft one (unlimited, say)
        return soft, soft
    return soft, hard
