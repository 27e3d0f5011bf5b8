"""The inference routes, served beneath FastAPI's middleware stack.

Every event of every stream would otherwise pass through each middleware's `send` wrapper (FastAPI's error,
exception, body-limit and telemetry layers, the request-id and door middlewares): a few microseconds a
token, multiplied by every token the gateway relays. `GatewayApp` answers `POST` to the inference paths
itself, doing once what those layers do: the request id (its headers added to the response's start, one
check a write), the door (gateway.http.door), and an OpenAI error for any exception
(`error_response`, the same answers the app's exception handlers give). Every other request - other paths,
other methods on these paths (a 405), the lifespan - goes through FastAPI as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.http.door import LEASE, SLOT
from gateway.http.errors import error_response, gateway_overloaded
from gateway.http.openapi import DocumentedApp
from gateway.http.request_id import assign_request_id

__all__ = ["GatewayApp", "Handler"]

Handler = Callable[[Request], Awaitable[Response]]


class GatewayApp(DocumentedApp):
    """FastAPI, with `direct` routes ((method, path) -> handler) served without its middleware stack."""

    def __init__(self, *, direct: Mapping[tuple[str, str], Handler], **settings: Any) -> None:
        super().__init__(**settings)
        self._direct = dict(direct)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self._direct.get((scope["method"], scope["path"]))
            if handler is not None:
                await self._serve(handler, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        id_headers = assign_request_id(scope)

        async def send_with_id(message: Message) -> None:  # a check or two a write (it carries many events)
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *id_headers]
            elif not message.get("more_body", False) and (lease := scope.get(LEASE)) is not None:
                lease.release()  # before the last byte: the client's next request finds its key's place free
            await send(message)

        gateway = scope["state"]["gateway"]  # the lifespan's GatewayState
        door = gateway.door
        if not door.admit():
            await gateway_overloaded().response()(scope, receive, send_with_id)
            return
        try:
            request = Request(scope, receive)
            try:
                response = await handler(request)
            except Exception as exc:  # as the app's exception handlers would answer it
                response = error_response(request, exc)
            await response(scope, receive, send_with_id)
        finally:
            lease = scope.get(LEASE)  # its place among its key's requests (gateway.limits.concurrency)
            if lease is not None:
                lease.release()
            slot = scope.get(SLOT)  # its tier's place (gateway.http.tier_queues), taken by the handler
            if slot is None:
                door.leave()
            else:
                gateway.queues.release(slot)  # counted by its tier since it took the slot
