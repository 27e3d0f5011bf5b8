"""The ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from gateway.admin import admin_router
from gateway.errors import install_error_handlers
from gateway.metering import MeterSink
from gateway.request_id import RequestIdMiddleware
from gateway.routes import inference_routes, router
from gateway.settings import Settings, settings_from_environment
from gateway.state import GatewayState
from gateway.usage_routes import usage_router

__all__ = ["app_from_environment", "create_app"]


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sinks: Sequence[MeterSink] | None = None,
) -> FastAPI:
    """A gateway app; its state is built when the server starts it (lifespan), never at import.

    `transport` replaces the engine transport (tests); `sinks` receive each request's exchange
    record (default: one log line per request).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        state = await GatewayState.create(settings, transport=transport, sinks=sinks)
        if state.bookkeeper is not None:
            await state.bookkeeper.catch_up(timeout_s=5.0)
        state.start()
        try:
            yield {"gateway": state}
        finally:
            await state.aclose()

    app = FastAPI(
        title="tiergate",
        summary="OpenAI-compatible gateway with a fast and a deliberate tier",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.router.routes.extend(inference_routes)
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(usage_router)
    app.add_middleware(RequestIdMiddleware)
    return app


def app_from_environment() -> FastAPI:
    """Factory for uvicorn's worker processes (`tiergate serve --workers N`)."""
    return create_app(settings_from_environment())
