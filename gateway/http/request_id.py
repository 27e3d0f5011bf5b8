"""Request ids. Every request gets a fresh gateway id: the key of its ledger row, the id sent to the engine
and logged, what `x-tiergate-request-id` returns, and, behind the endpoint's prefix, the reply's `id`
(`chatcmpl-req_...`: gateway.endpoints). `x-request-id` on the response is the client's own id
when it sent a sane one (for its tracing), else the gateway id. A client's id is never trusted as a key: a
client reusing one must still have each request billed once, and a request of another tenant never shadowed.
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestIdMiddleware", "assign_request_id", "request_id_of"]

_HEADER = b"x-request-id"
_GATEWAY_HEADER = b"x-tiergate-request-id"
_MAX_LENGTH = 128


def _acceptable(value: bytes) -> bool:
    return 0 < len(value) <= _MAX_LENGTH and all(0x21 <= byte <= 0x7E for byte in value)


def assign_request_id(scope: Scope) -> list[tuple[bytes, bytes]]:
    """Give the request in `scope` its gateway id (`request_id_of`); the headers its response carries."""
    client_id = b""
    for name, value in scope["headers"]:
        if name == _HEADER:
            client_id = value
            break
    gateway_id = b"req_" + secrets.token_hex(16).encode()
    scope.setdefault("state", {})["request_id"] = gateway_id.decode()
    return [(_HEADER, client_id if _acceptable(client_id) else gateway_id), (_GATEWAY_HEADER, gateway_id)]


class RequestIdMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it must cost next to nothing per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = assign_request_id(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id_of(scope: Scope) -> str:
    request_id: str = scope["state"]["request_id"]
    return request_id
