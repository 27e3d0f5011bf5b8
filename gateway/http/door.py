"""The door: which inference requests one worker lets in.

Refused, before any work is done for them (no key lookup, no Redis, no reservation), with 503
`gateway_overloaded` and `retry-after`: requests beyond `server.max_concurrent_requests` in flight (a stream
counts until its last byte), and every request for a moment after the gateway ran short of file descriptors or
memory (`engines.LocalOverload`, reported by the pools). A fixed limit per worker, from settings: simple to
reason about and to size against the open-file limit (each request holds a client and an engine connection).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.http.endpoints import CHAT, COMPLETIONS, RESPONSES_PATH
from gateway.http.errors import gateway_overloaded

__all__ = ["SHUT_S", "Door", "DoorMiddleware"]

SHUT_S = 1.0  # how long a shortage shuts the door: as long as asyncio pauses accepting after EMFILE
_GUARDED = frozenset({CHAT.path, COMPLETIONS.path, RESPONSES_PATH})


class Door:
    """The count of inference requests in flight in this worker, against its limit."""

    __slots__ = ("_clock", "_shut_until", "in_flight", "limit")

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.in_flight = 0
        self._shut_until = 0.0
        self._clock = clock

    def admit(self) -> bool:
        """Let one more in (then `leave()` when it is done), or refuse it."""
        if self.in_flight >= self.limit:
            return False
        if self._shut_until:  # the clock is read only while shut
            if self._clock() < self._shut_until:
                return False
            self._shut_until = 0.0
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def shut(self) -> None:
        """The gateway ran short: refuse every new request for `SHUT_S`."""
        self._shut_until = self._clock() + SHUT_S


class DoorMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): a set lookup and two integer operations per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in _GUARDED:
            await self.app(scope, receive, send)
            return
        door: Door = scope["state"]["gateway"].door  # the lifespan's GatewayState
        if not door.admit():
            await gateway_overloaded().response()(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            door.leave()
