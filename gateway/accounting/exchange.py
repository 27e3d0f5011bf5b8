"""What each request did, recorded once at its end: the seam where metering and billing plug in.

An `Exchange` is built exactly once per inference request - when the response body is complete, when
the client vanished mid-stream, or when the engine failed - and handed to every `MeterSink`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from engines import EngineRejected, StreamTally, Usage
from gateway.tiers import Tier

__all__ = ["Exchange", "MeterSink", "Outcome"]


class Outcome(StrEnum):
    OK = "ok"
    CLIENT_DISCONNECTED = "client_disconnected"
    ENGINE_FAILED = "engine_failed"
    REJECTED = "rejected"  # the engine refused the request itself (4xx)
    ABORTED = "aborted"  # the gateway stopped it (shutdown)

    @classmethod
    def of_engine_error(cls, exc: BaseException) -> Outcome:
        """Refused by the engine: `rejected`; any other failure of the engine call: `engine_failed`."""
        return cls.REJECTED if isinstance(exc, EngineRejected) else cls.ENGINE_FAILED

    @classmethod
    def of_failure(cls, exc: BaseException, *, disconnected: bool) -> Outcome:
        """How a request that did not complete ended, for every path (relayed, deliberated, streamed or
        not): cancelled because its client left (`client_disconnected`) or by a shutdown (`aborted`),
        refused by the engine, or failed (the engine's fault, or one of ours)."""
        if isinstance(exc, asyncio.CancelledError):
            return cls.CLIENT_DISCONNECTED if disconnected else cls.ABORTED
        return cls.of_engine_error(exc)


@dataclass(frozen=True, slots=True)
class Exchange:
    request_id: str
    endpoint: str  # "chat", "completions" or "responses"
    key_id: str | None  # None when authentication is disabled
    tenant: str | None
    model: str  # the public model id, without tier
    served_model: str  # the engine's name for it
    tier: Tier
    pool: str
    replica: str
    streamed: bool
    outcome: Outcome
    # the HTTP status the client got (a stream the engine failed late still got 200), except 499 whenever the
    # client left before the response ended, streamed or not, and 503 when a shutdown cut it before any answer
    status: int
    usage: Usage | None  # as the engine reported it; None when the stream was cut before its usage
    tally: StreamTally | None  # what a stream generated, for metering when usage is missing
    reply: dict[str, Any] | None  # a non-streamed response's body (read only when its usage lacks detail)
    body_size: int  # bytes of the request body: the basis of a prompt estimate
    started_at: float  # wall-clock seconds since the epoch
    first_token_s: float | None  # seconds from start to the first event relayed
    duration_s: float
    estimated: bool = False  # `usage` is partly counted by the gateway (a deliberation call cut short)
    # tokens of the one answer a stream carried (a deliberation's delivered sample), for the inter-token
    # latency; None: all of the completion
    delivered_tokens: int | None = None
    priority_class: str = "standard"  # its tenant's (pricing.PRIORITY_CLASSES)


class MeterSink(Protocol):
    """Receives every exchange. Called on the event loop: it must not block."""

    def record(self, exchange: Exchange) -> None: ...
