"""The HTTP routes: each one line into the object that does the work."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from gateway.errors import GatewayError
from gateway.proxy import CHAT, COMPLETIONS
from gateway.state import GatewayState

__all__ = ["router"]


async def _gateway(request: Request) -> GatewayState:  # async: FastAPI runs sync dependencies in threads
    state: GatewayState = request.state.gateway
    return state


Gateway = Annotated[GatewayState, Depends(_gateway)]
router = APIRouter()


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status, media_type="application/json")


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, gateway: Gateway) -> Response:
    return await gateway.proxy.handle(request, CHAT)


@router.post("/v1/completions")
async def completions(request: Request, gateway: Gateway) -> Response:
    return await gateway.proxy.handle(request, COMPLETIONS)


@router.get("/v1/models")
async def list_models(gateway: Gateway) -> Response:
    return _json(gateway.catalog.models_json())


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, gateway: Gateway) -> Response:
    card = gateway.catalog.card(model_id)
    if card is None:
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
