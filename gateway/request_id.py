"""`x-request-id` on every response: the client's own when it sent a sane one, else a new one."""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestIdMiddleware", "request_id_of"]

_HEADER = b"x-request-id"
_MAX_LENGTH = 128


def _acceptable(value: bytes) -> bool:
    return 0 < len(value) <= _MAX_LENGTH and all(0x21 <= byte <= 0x7E for byte in value)


class RequestIdMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it must cost next to nothing per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b""
        for name, value in scope["headers"]:
            if name == _HEADER:
                request_id = value
                break
        if not _acceptable(request_id):
            request_id = b"req_" + secrets.token_hex(16).encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode()
        header = (_HEADER, request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id_of(scope: Scope) -> str:
    request_id: str = scope["state"]["request_id"]
    return request_id
