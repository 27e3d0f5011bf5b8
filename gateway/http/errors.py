"""OpenAI error envelopes: every failure the gateway answers is one of these, never a traceback.

GatewayError                 status + OpenAI `type`, `code` (a string), `param`, extra headers
├── raised by request parsing and the routes of the HTTP edge
├── from_refusal()           a `gateway.refusals.Refusal` the domain raised (kind -> status), translated here
└── from_engine_error()      the translation of `engines.EngineError` at the boundary
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from engines import (
    EngineError,
    EngineFailed,
    EngineOverloaded,
    EngineRejected,
    EngineTimeout,
    EngineUnavailable,
    LocalOverload,
    NoReplicaAvailable,
)
from gateway.budgets import BudgetUnavailable
from gateway.database import DatabaseUnavailable
from gateway.http.disconnect import CLIENT_CLOSED
from gateway.refusals import Refusal, RefusalKind

__all__ = [
    "GatewayError",
    "error_event",
    "error_response",
    "from_engine_error",
    "from_refusal",
    "gateway_overloaded",
    "install_error_handlers",
]

log = logging.getLogger("tiergate.errors")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type or _TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> Response:
        return Response(
            orjson.dumps(self.envelope()), self.status, headers=self.headers, media_type="application/json"
        )


_REFUSAL_STATUS: dict[RefusalKind, int] = {
    "invalid": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "rate_limited": 429,
    "over_quota": 429,
    "unavailable": 503,
}


def from_refusal(refusal: Refusal) -> GatewayError:
    """What the client is told of a refusal the domain decided."""
    return GatewayError(
        _REFUSAL_STATUS[refusal.kind],
        refusal.message,
        code=refusal.code,
        param=refusal.param,
        error_type="insufficient_quota" if refusal.kind == "over_quota" else None,
        headers=refusal.headers,
    )


def _retry_headers(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    seconds = max(seconds, 0.0)
    return {"retry-after": str(max(1, math.ceil(seconds))), "retry-after-ms": str(int(seconds * 1000))}


def gateway_overloaded(retry_after_s: float = 1.0) -> GatewayError:
    """The gateway itself is short (of file descriptors, memory, or room under its concurrency limit or its
    tier's share of it). The retry is asked for at a time drawn evenly from half `retry_after_s` to one and a
    half times it: the OpenAI SDKs wait exactly what `retry-after-ms` says, and the clients refused in one
    burst would otherwise all come back in the same millisecond, to be refused together again."""
    message = "The gateway is overloaded; retry shortly."
    spread = retry_after_s * (0.5 + random.random())
    return GatewayError(503, message, code="gateway_overloaded", headers=_retry_headers(spread))


def from_engine_error(exc: EngineError) -> GatewayError:
    """What the client is told when an engine call failed (after any failover)."""
    if isinstance(exc, EngineRejected):
        if exc.status == 404:  # the engine lacks a model our catalog promised: our fault, not the client's
            return GatewayError(
                502, f"the engine does not serve this model: {exc.message}", code="engine_error"
            )
        status = exc.status if exc.status in (400, 413, 422) else 400
        return GatewayError(
            400 if status == 422 else status,
            exc.message,
            code=exc.code,
            param=exc.param,
            error_type=exc.error_type,
        )
    if isinstance(exc, LocalOverload):
        return gateway_overloaded()
    if isinstance(exc, NoReplicaAvailable):
        return GatewayError(
            503, exc.message, code="no_healthy_replica", headers=_retry_headers(exc.retry_after_s)
        )
    if isinstance(exc, EngineOverloaded):
        retry = exc.retry_after_s if exc.retry_after_s is not None else 1.0
        return GatewayError(
            503,
            "the engines are overloaded; retry shortly",
            code="engine_overloaded",
            headers=_retry_headers(retry),
        )
    if isinstance(exc, EngineTimeout):
        return GatewayError(504, f"the engine timed out ({exc.phase})", code="engine_timeout")
    if isinstance(exc, EngineUnavailable):
        return GatewayError(
            502, "the engine could not be reached", code="engine_unreachable", headers=_retry_headers(1.0)
        )
    detail = f" (HTTP {exc.status})" if isinstance(exc, EngineFailed) and exc.status else ""
    if isinstance(exc, EngineFailed) and exc.reported:
        # the engine's own words: often a configuration problem an operator must see (a vLLM started
        # without --reasoning-parser refusing thinking_token_budget, say)
        detail = f": {exc.reported}"
    return GatewayError(
        502, f"the engine failed to answer{detail}", code="engine_error", headers=_retry_headers(1.0)
    )


def error_event(error: GatewayError) -> bytes:
    """An error as an SSE event, for a stream whose headers are already sent."""
    return b"data: " + orjson.dumps(error.envelope()) + b"\n\n"


def error_response(request: Request, exc: Exception) -> Response:
    """The answer to a request whose handling raised `exc`: what the app's exception handlers answer, and
    what the inference routes (served beneath them: gateway.http.dispatch) answer."""
    if isinstance(exc, GatewayError):
        return exc.response()
    if isinstance(exc, Refusal):
        return from_refusal(exc).response()
    if isinstance(exc, StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"Unknown request URL: {request.method} {request.url.path}."
        return GatewayError(exc.status_code, message, code=code, headers=dict(exc.headers or {})).response()
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(part) for part in first["loc"][1:]) or None
        return GatewayError(400, str(first["msg"]), param=param, code="invalid_value").response()
    # an outage (logged once where it is seen) is a 503 the client retries
    if isinstance(exc, DatabaseUnavailable):
        return _outage("The database cannot be reached right now; retry shortly.", "database_unavailable")
    if isinstance(exc, BudgetUnavailable):
        return _outage("Budgets cannot be read right now; retry shortly.", "budget_unavailable")
    if isinstance(exc, ClientDisconnect):
        return Response(status_code=CLIENT_CLOSED)  # the client left while sending its body: nobody to answer
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # the connection is closed after this answer (the client is told): what state the error left is unknown
    return GatewayError(
        500, "The gateway had an internal error.", code="internal_error", headers={"connection": "close"}
    ).response()


def _outage(message: str, code: str) -> Response:
    return GatewayError(503, message, code=code, headers={"retry-after": "1"}).response()


def install_error_handlers(app: FastAPI) -> None:
    async def handler(request: Request, exc: Exception) -> Response:
        return error_response(request, exc)

    async def unexpected(request: Request, exc: Exception) -> Response:
        # Starlette answers this outside the request-id middleware (and re-raises the error after it): the
        # header is added here
        response = error_response(request, exc)
        if request_id := request.scope.get("state", {}).get("request_id"):
            response.headers["x-request-id"] = request_id
        return response

    app.add_exception_handler(Exception, unexpected)
    for kind in (
        GatewayError,
        Refusal,
        StarletteHTTPException,
        RequestValidationError,
        DatabaseUnavailable,
        BudgetUnavailable,
        ClientDisconnect,
    ):
        app.add_exception_handler(kind, handler)
