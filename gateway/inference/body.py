"""A request's body: read under the size limit (413 `request_too_large`), parsed as a JSON object (400
`invalid_json`)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from gateway.http.errors import GatewayError

__all__ = ["json_object", "read_body"]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise GatewayError(400, "The Content-Length header is not a number.", code="invalid_request")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"The request body is larger than the limit of {limit} bytes.", code="request_too_large"
    )


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 `invalid_json`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise GatewayError(
            400,
            "We could not parse the JSON body of your request. The body must be a JSON object"
            " sent with Content-Type: application/json.",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
    return data
