"""The simulator as an ASGI app: a dict router in front of the handlers, errors in vLLM's shape."""

from __future__ import annotations

from types import MappingProxyType

import orjson

from engines.simulator import handlers
from engines.simulator.asgi import Exchange, Receive, Scope, Send
from engines.simulator.config import SimulatorConfig
from engines.simulator.engine import Engine
from engines.simulator.errors import SimulatorError

__all__ = ["SimulatorApp", "create_simulator_app"]

_ROUTES = MappingProxyType(
    {
        ("POST", "/v1/chat/completions"): handlers.chat_completions,
        ("POST", "/v1/completions"): handlers.completions,
        ("GET", "/v1/models"): handlers.models,
        ("GET", "/health"): handlers.health,
        ("POST", "/tokenize"): handlers.tokenize,
        ("GET", "/version"): handlers.version,
        ("GET", "/load"): handlers.load,
        ("GET", "/metrics"): handlers.metrics,
    }
)
_PATHS = frozenset(path for _, path in _ROUTES)
# Unknown routes answer as FastAPI (vLLM's framework) does.
_NOT_FOUND = orjson.dumps({"detail": "Not Found"})
_NOT_ALLOWED = orjson.dumps({"detail": "Method Not Allowed"})


class SimulatorApp:
    """An ASGI app serving one simulated engine. `healthy` can be flipped while it runs; `engine`
    exposes its state to tests (`engine.scheduler.running[model]`, `engine.in_flight`)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.engine = Engine(config)

    @property
    def healthy(self) -> bool:
        return self.engine.healthy

    @healthy.setter
    def healthy(self, value: bool) -> None:
        self.engine.healthy = value

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)
        # Other scopes (websocket) are not served; returning closes them.

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        x = Exchange(scope, receive, send)
        handler = _ROUTES.get((scope["method"], scope["path"]))
        if handler is None:
            if scope["path"] in _PATHS:
                await x.respond(405, _NOT_ALLOWED)
            else:
                await x.respond(404, _NOT_FOUND)
            return
        if scope["method"] == "POST":
            await x.read_body()
        try:
            await handler(self.engine, x)
        except SimulatorError as exc:
            if x.started:
                raise
            await x.respond(exc.status, exc.body(), headers=exc.headers())


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_simulator_app(config: SimulatorConfig) -> SimulatorApp:
    """A fresh app; every bit of its state (metrics registry included) belongs to it alone."""
    return SimulatorApp(config)
