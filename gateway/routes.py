"""The HTTP routes: each one line into the object that does the work.

The two inference routes are plain Starlette routes (`inference_routes`): FastAPI's per-request dependency
and validation machinery cost a large share of a worker's throughput (docs/benchmarks.md, "Figures behind
design choices"), for nothing these routes use - they parse and check their bodies themselves
(`gateway.http.schemas`). The other routes use FastAPI's typed dependencies.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response
from starlette.routing import Route

from gateway.accounting.metrics import scrape_registry
from gateway.http.endpoints import CHAT, COMPLETIONS, RESPONSES_PATH
from gateway.http.errors import GatewayError
from gateway.keys import ApiKey
from gateway.state import GatewayState

__all__ = ["direct_routes", "gateway_state", "inference_routes", "router"]


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
    registry = scrape_registry(gateway.registry, gateway.collector, gateway.door_collector)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status, media_type="application/json")


async def chat_completions(request: Request) -> Response:
    return await gateway_state(request).proxy.handle(request, CHAT)


async def completions(request: Request) -> Response:
    return await gateway_state(request).proxy.handle(request, COMPLETIONS)


async def create_response(request: Request) -> Response:
    return await gateway_state(request).responses.create(request)


async def retrieve_response(request: Request) -> Response:
    return await gateway_state(request).responses.retrieve(request)


async def delete_response(request: Request) -> Response:
    return await gateway_state(request).responses.delete(request)


async def response_input_items(request: Request) -> Response:
    return await gateway_state(request).responses.input_items(request)


# the inference requests: served by the app beneath its middleware (gateway.http.dispatch)
direct_routes = {
    ("POST", CHAT.path): chat_completions,
    ("POST", COMPLETIONS.path): completions,
    ("POST", RESPONSES_PATH): create_response,
}
inference_routes = [  # the same (for the API's document, and a 405 to other methods), and the rest
    Route(CHAT.path, chat_completions, methods=["POST"]),
    Route(COMPLETIONS.path, completions, methods=["POST"]),
    Route(RESPONSES_PATH, create_response, methods=["POST"]),
    Route(RESPONSES_PATH + "/{response_id}", retrieve_response, methods=["GET"]),
    Route(RESPONSES_PATH + "/{response_id}", delete_response, methods=["DELETE"]),
    Route(RESPONSES_PATH + "/{response_id}/input_items", response_input_items, methods=["GET"]),
]


def _visible(card: dict[str, Any], key: ApiKey | None, *, listed: bool = False) -> bool:
    """A key sees the models and tiers it may use. An id that may lead to several tiers (`model:auto`, the
    bare `model`) is there when the key may use one of them, and listed (auto) when it may use two: auto
    has a choice for it (it picks among the tiers the key may use)."""
    if key is None:
        return True
    if key.models is not None and card["root"] not in key.models:
        return False
    tiers = card.get("tiers")
    if tiers is None:
        return bool(card["tier"] in key.tiers)
    return sum(tier in key.tiers for tier in tiers) >= (2 if listed else 1)


@router.get("/v1/models")
async def list_models(gateway: Gateway, key: ClientKey) -> Response:
    if key is None:
        return _json(gateway.catalog.models_json())
    cards = [card for card in gateway.catalog.cards if _visible(card, key, listed=True)]
    return _json(orjson.dumps({"object": "list", "data": cards}))


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, gateway: Gateway, key: ClientKey) -> Response:
    """Every id a request may name: `model:tier`, `model:auto`, the bare `model`."""
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
    """Every configured pool has at least one replica that passed its health check, and the door is not
    shedding load (under saturation the gateway turns unready, so that a load balancer steers away)."""
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
    door = gateway.door
    body = {
        "status": "ready" if ready else "not_ready",
        "pools": pools,
        "door": {
            "saturated": door.saturated,
            "in_flight": door.in_flight,
            "limit": door.limit,
            "loop_lag_s": round(gateway.lag.current(), 4),
        },
    }
    return _json(orjson.dumps(body), 200 if ready else 503)
