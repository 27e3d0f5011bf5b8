"""The HTTP client every engine adapter of a gateway shares."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from engines.transport import EngineTransport

__all__ = ["EngineHTTP"]


@dataclass(frozen=True, slots=True)
class EngineHTTP:
    """One keep-alive connection pool, reached two ways.

    `client` is the shared `httpx.AsyncClient` for the cold path (health checks, metrics, tokenize).
    The hot path (chat and completions) hands requests straight to `transport`, the same pool, and so
    skips the client's per-call auth, redirect, cookie and event-hook machinery (a third of the gateway's
    budget per request: docs/benchmarks.md). Tests swap the transport, as with httpx.
    """

    client: httpx.AsyncClient
    transport: httpx.AsyncBaseTransport

    @classmethod
    def create(
        cls, transport: httpx.AsyncBaseTransport | None = None, *, connections_per_origin: int = 512
    ) -> EngineHTTP:
        """`connections_per_origin`: connections open to one replica, at most (the default transport)."""
        if transport is None:
            transport = EngineTransport(max_connections_per_origin=connections_per_origin)
        # identity: engines answer small JSON/SSE; decompression would only cost CPU on the hot path
        client = httpx.AsyncClient(transport=transport, headers={"accept-encoding": "identity"})
        return cls(client=client, transport=transport)

    async def aclose(self) -> None:
        await self.client.aclose()  # closes the transport too
