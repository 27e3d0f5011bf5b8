"""What can go wrong inside the simulator, and how vLLM would say it.

Exception
 ├── SimulatorError   an error answered as JSON before the response starts (status, vLLM body)
 └── SimulatedDrop    raised after the response started: the server drops the connection mid-body
"""

from __future__ import annotations

from types import MappingProxyType

import orjson

__all__ = ["SimulatedDrop", "SimulatorError", "error_type"]

# vLLM names the error type after the exception class it raised.
_ERROR_TYPES = MappingProxyType(
    {
        400: "BadRequestError",
        401: "UnauthorizedError",
        403: "ForbiddenError",
        404: "NotFoundError",
        408: "RequestTimeoutError",
        413: "RequestEntityTooLargeError",
        429: "RateLimitError",
        500: "InternalServerError",
        502: "BadGatewayError",
        503: "ServiceUnavailableError",
        504: "GatewayTimeoutError",
    }
)


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "BadRequestError" if status < 500 else "InternalServerError")


class SimulatorError(Exception):
    """An HTTP error in vLLM's body shape: {"error": {"message", "type", "param", "code": status}};
    `param` names the request field at fault where vLLM names it (its VLLMValidationError)."""

    def __init__(
        self, status: int, message: str, *, retry_after_s: int | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s
        self.param = param

    def body(self) -> bytes:
        error = {
            "message": self.message,
            "type": error_type(self.status),
            "param": self.param,
            "code": self.status,
        }
        return orjson.dumps({"error": error})

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.retry_after_s is None:
            return []
        return [(b"retry-after", str(self.retry_after_s).encode())]


class SimulatedDrop(Exception):
    """Raised inside the app once the response has started; uvicorn then closes the connection
    without finishing the chunked body, which is what an engine crash looks like to a client."""
