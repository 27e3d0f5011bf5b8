"""Errors raised by engine clients and pools.

The tree, with whether a pool may retry the request on another replica (only ever before anything
reached the client):

    EngineError                      base; carries the replica's URL
    ├── EngineUnavailable            could not connect, or the connection broke before a response  (retry)
    │   └── NoReplicaAvailable       no replica of the pool is healthy and out of cool-down          (no)
    ├── EngineOverloaded             the engine refused for load: HTTP 429 or 503                   (retry)
    ├── EngineTimeout                connect, first-token, idle-between-chunks or total timeout     (retry)
    ├── EngineFailed                 the engine answered 5xx, or something that is not its protocol  (retry)
    ├── EngineRejected               the engine refused the request itself (4xx): retrying is futile (no)
    └── LocalOverload                this process ran short (descriptors, memory, socket buffers, its own
                                     connection pool): says nothing of the replica, never held against it (no)

Errors of the HTTP layer below are translated at the boundary (`raise EngineTimeout(...) from exc`).
"""

from __future__ import annotations

__all__ = [
    "EngineError",
    "EngineFailed",
    "EngineOverloaded",
    "EngineRejected",
    "EngineTimeout",
    "EngineUnavailable",
    "LocalOverload",
    "NoReplicaAvailable",
]


class EngineError(Exception):
    retryable = True

    def __init__(self, message: str, *, replica: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.replica = replica


class EngineUnavailable(EngineError):
    pass


class NoReplicaAvailable(EngineUnavailable):
    retryable = False

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineOverloaded(EngineError):
    def __init__(self, message: str, *, replica: str = "", status: int, retry_after_s: float | None) -> None:
        super().__init__(message, replica=replica)
        self.status = status
        self.retry_after_s = retry_after_s


class EngineTimeout(EngineError):
    def __init__(self, message: str, *, replica: str = "", phase: str) -> None:
        super().__init__(message, replica=replica)
        self.phase = phase  # "connect", "first_token", "idle" or "total"


class EngineFailed(EngineError):
    def __init__(
        self, message: str, *, replica: str = "", status: int | None = None, reported: str | None = None
    ) -> None:
        super().__init__(message, replica=replica)
        self.status = status
        self.reported = reported  # the engine's own error message, when it sent one


class EngineRejected(EngineError):
    """The engine's own 4xx answer, already in OpenAI terms (string `code`, never vLLM's number)."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        replica: str = "",
        status: int,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, replica=replica)
        self.status = status
        self.error_type = error_type
        self.param = param
        self.code = code


class LocalOverload(EngineError):
    """The call could not be made for want of something of this process's own (EMFILE, ENFILE, ENOMEM,
    ENOBUFS, or no free connection in its pool to the engine in time). `replica` is the one it was meant for;
    failing over would meet the same shortage."""

    retryable = False
