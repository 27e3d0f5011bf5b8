"""The HTTP routes: each one line into the object that does the work.

The two inference routes are plain Starlette routes (`inference_routes`): FastAPI's per-request dependency
and validation machinery cost about a quarter of a worker's throughput on the reference machine (1,380 vs
1,870 req/s through the gateway at 50 concurrent requests), for nothing these routes use - they parse and
check their bodies themselves (`gateway.schemas`). The other routes use FastAPI's typed dependencies.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response
from starlette.routing import Route

from gateway.endpoints import CHAT, COMPLETIONS
from gateway.errors import GatewayError
from gateway.keys import ApiKey
from gateway.metrics import scrape_registry
from gateway.state import GatewayState

__all__ = ["gateway_state", "inference_routes", "router"]


def gateway_state(request: Request) -> GatewayState:
    state: GatewayState = request.state.gateway  # built by the app's lifespan
    return state


async def _gateway(request: Request) -> GatewayState:  # async: FastAPI runs sync dependencies in threads
    return gateway_state(request)


async def _client_key(request: Request) -> ApiKey | None:
    return await gateway_state(request).admitter.authenticate(request.headers)


Gateway = Annotated[GatewayState, Depends(_gateway)]
ClientKey = Annotated[ApiKey | None, Depends(_client_key)]  # None when authentication is disabled
router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(gateway: Gateway) -> Response:
    """Prometheus text: the gateway's own metrics (no key needed, like the probes)."""
    registry = scrape_registry(gateway.registry, gateway.collector)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status, media_type="application/json")


async def chat_completions(request: Request) -> Response:
    return await gateway_state(request).proxy.handle(request, CHAT)


async def completions(request: Request) -> Response:
    return await gateway_state(request).proxy.handle(request, COMPLETIONS)


inference_routes = [
    Route(CHAT.path, chat_completions, methods=["POST"]),
    Route(COMPLETIONS.path, completions, methods=["POST"]),
]


def _visible(card: dict[str, object], key: ApiKey | None) -> bool:
    """A key sees the models and tiers it may use."""
    if key is None:
        return True
    return card["tier"] in key.tiers and (key.models is None or card["root"] in key.models)


@router.get("/v1/models")
async def list_models(gateway: Gateway, key: ClientKey) -> Response:
    if key is None:
        return _json(gateway.catalog.models_json())
    cards = [card for card in gateway.catalog.cards if _visible(card, key)]
    return _json(orjson.dumps({"object": "list", "data": cards}))


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, gateway: Gateway, key: ClientKey) -> Response:
    card = gateway.catalog.card(model_id)
    if card is None or not _visible(card, key):
        raise GatewayError(
            404, f"The model `{model_id}` does not exist.", code="model_not_found", param="model"
        )
    return _json(orjson.dumps(card))


@router.get("/healthz")
async def healthz() -> Response:
    """The process is alive and serving HTTP."""
    return _json(b'{"status":"ok"}')


@router.get("/readyz")
async def readyz(gateway: Gateway) -> Response:
    """Every configured pool has at least one replica that passed its health check."""
    pools = {
        name: {
            "ready": pool.ready,
            "replicas": [
                {"url": r.url, "healthy": r.healthy, "outstanding": r.outstanding, "failures": r.failures}
                for r in pool.replicas
            ],
        }
        for name, pool in gateway.pools.items()
    }
    ready = gateway.ready
    body = {"status": "ready" if ready else "not_ready", "pools": pools}
    return _json(orjson.dumps(body), 200 if ready else 503)
