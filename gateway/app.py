"""The ASGI application."""

from __future__ import annotations

import fcntl
import gc
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from gateway.accounting.exchange import MeterSink
from gateway.admin.routes import admin_router
from gateway.admin.usage_routes import usage_router
from gateway.console import console_router
from gateway.http.dispatch import GatewayApp
from gateway.http.errors import install_error_handlers
from gateway.http.request_id import RequestIdMiddleware
from gateway.logs import configure_logging
from gateway.probes.prober import ProbeMetrics, Prober, probe_key
from gateway.probes.tasks import ProbeRetries, builtin_tasks, load_tasks
from gateway.routes import direct_routes, inference_routes, router
from gateway.settings import Settings, metrics_multiprocess_dir, settings_from_environment
from gateway.state import GatewayState
from pricing import parse_money

__all__ = ["SWITCH_INTERVAL_S", "app_from_environment", "create_app"]

SWITCH_INTERVAL_S = 0.001  # the interpreter lock's hand-over to a waiting thread (Python's default: 5 ms)


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sinks: Sequence[MeterSink] | None = None,
    server_process: bool = False,
) -> FastAPI:
    """A gateway app; its state is built when the server starts it (lifespan), never at import.

    `transport` replaces the engine transport (tests); `sinks` receive each request's exchange
    record (default: one log line per request). `server_process`: the app is its process's one server, tuned
    as such once started (not for a process that builds many apps, as tests do):
    - every object made so far (modules, settings, the state) moves out of the garbage collector's sight
      (`gc.freeze()`): a collection then looks at what requests made, not at the whole heap - which, unfrozen,
      costs about a third of the CPU of relaying a long stream (docs/benchmarks.md). What it froze is never
      collected.
    - the interpreter hands its lock to a waiting thread after `SWITCH_INTERVAL_S`, not 5 ms: the event loop
      waits less for it behind the background threads (the journal's, the ledger writer's, the request log's),
      and a refusal or a first token with it.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        state = await GatewayState.create(settings, transport=transport, sinks=sinks)
        if state.bookkeeper is not None:
            await state.bookkeeper.catch_up(timeout_s=5.0)
        state.start()
        if server_process:
            gc.freeze()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        with ExitStack() as lease:
            probes = settings.probes.enabled and _probe_lease(lease)
            prober = await _prober(app, state) if probes else None
            try:
                yield {"gateway": state}
            finally:
                if prober is not None:
                    await prober.aclose()
                await state.aclose()

    app = GatewayApp(  # /openapi.json and /docs: gateway/http/openapi
        title="tiergate",
        summary="OpenAI-compatible gateway with a fast and a deliberate tier",
        lifespan=lifespan,
        direct=direct_routes,  # served beneath the middleware below: gateway/http/dispatch
    )
    install_error_handlers(app)
    app.router.routes.extend(inference_routes)
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(usage_router)
    app.include_router(console_router)
    app.add_middleware(RequestIdMiddleware)
    return app


def _probe_lease(lease: ExitStack) -> bool:
    """Whether this process probes. The workers of one `tiergate serve` share a metrics directory: the first
    to lock `probes.lock` there probes, for as long as `lease` stays open; the others do not (a prober each
    would spend the daily limit once per worker, and each new probe key revokes the one before). A single
    process always probes."""
    shared = metrics_multiprocess_dir()
    if shared is None:
        return True
    lock = lease.enter_context((Path(shared) / "probes.lock").open("a"))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def _prober(app: FastAPI, state: GatewayState) -> Prober:
    """The periodic probes, sent to this very app in process (no network; one worker of several probes)."""
    probes = state.settings.probes
    headers = {}
    if state.keys is not None and state.settings.auth.mode == "keys":
        headers["authorization"] = f"Bearer {await probe_key(state.keys)}"

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        # what the server passes every request from the lifespan; an in-process transport must do it too
        await app({**scope, "state": {"gateway": state}}, receive, send)

    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=with_state),
        base_url="http://tiergate.probes",
        headers=headers,
        timeout=max(pool.timeouts.total_s for pool in state.settings.pools.values()),
    )
    tasks = load_tasks(probes.task_file) if probes.task_file else builtin_tasks(probes.tasks)
    targets = [
        (offer.model, offer.tier.value)
        for offer in state.catalog.offers
        if (probes.models is None or offer.model in probes.models) and offer.tier in probes.tiers
    ]
    prober = Prober(
        client,
        targets,
        tasks,
        ProbeMetrics(state.registry),
        interval_s=probes.interval_s,
        daily_limit_micros=parse_money(probes.daily_limit),
        effort=probes.effort.value if probes.effort is not None else None,
        retries=ProbeRetries(probes.max_retries, probes.max_retry_wait_s),
    )
    prober.start()
    return prober


def app_from_environment() -> FastAPI:
    """Factory for uvicorn's worker processes (`tiergate serve --workers N`): each logs as the parent does."""
    settings = settings_from_environment()
    configure_logging(settings.server.log_level, off_loop=True)
    return create_app(settings, server_process=True)
