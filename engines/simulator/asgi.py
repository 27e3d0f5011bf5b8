"""The bare ASGI layer: types, one request/response exchange, and running work until the client
goes away. Hand-written instead of a framework because the zero-latency path must be cheap."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Exchange", "Message", "Receive", "Scope", "Send", "run_until_disconnect"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"


class Exchange:
    """One HTTP request and the response being sent for it."""

    __slots__ = ("body", "receive", "scope", "send", "started")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.body = b""
        self.started = False

    async def read_body(self) -> bytes:
        message = await self.receive()
        body: bytes = message.get("body", b"")
        while message.get("more_body", False):
            message = await self.receive()
            body += message.get("body", b"")
        self.body = body
        return body

    def header(self, name: bytes) -> str | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return bytes(value).decode("latin-1")
        return None

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes = JSON,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        raw = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": raw})
        await self.send({"type": "http.response.body", "body": body})

    async def start(
        self, status: int, content_type: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        """Start a response of unknown length (sent chunked)."""
        self.started = True
        raw = [(b"content-type", content_type), *headers]
        await self.send({"type": "http.response.start", "status": status, "headers": raw})

    async def write(self, data: bytes, *, more: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def wait_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass


async def run_until_disconnect(exchange: Exchange, work: Coroutine[Any, Any, None]) -> bool:
    """Run `work` while listening for the client to disconnect; on disconnect `work` is cancelled
    (so its sleeps end at once) and False is returned. Errors of `work` propagate."""
    task = asyncio.create_task(work)
    watcher = asyncio.create_task(exchange.wait_disconnect())
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()  # no-op once done
        watcher.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()
    return True
