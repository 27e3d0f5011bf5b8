"""The playground: one prompt sent to each tier of a model, answers side by side with their depth and cost.
Each is a real request to this very gateway, in process (as the probes send theirs), with the tenant's own
key: admitted, limited, metered and billed like any other. The key is typed into the form for this one
post and not kept (the session never holds a key's secret)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.console.page import Visit, visit
from gateway.database import DatabaseError
from gateway.keys import AuthError
from pricing import format_micros

__all__ = ["playground_router"]

VisitDep = Annotated[Visit, Depends(visit)]
playground_router = APIRouter(prefix="/console", include_in_schema=False)
MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True, slots=True)
class Answer:
    tier: str
    status: int
    text: str
    depth: dict[str, Any] | None
    cascade: dict[str, Any] | None  # a cascade's decision: escalated, confidence, threshold
    cost: str | None
    tokens: int | None


def _models(v: Visit) -> list[str]:
    key = v.key
    models = {offer.model for offer in v.state.catalog.offers if key is None or offer.tier.value in key.tiers}
    return sorted(model for model in models if key is None or key.allows_model(model))


def _page(v: Visit, status: int = 200, **context: Any) -> Response:
    shown: dict[str, Any] = {"answers": None, "error": None, "prompt": "", "chosen": None, **context}
    return v.render("playground.html", status, title="Playground", models=_models(v), **shown)


@playground_router.get("/playground")
async def playground_page(v: VisitDep) -> Response:
    return v.refuse("tenant") or _page(v)


@playground_router.post("/playground")
async def playground(v: VisitDep) -> Response:
    if (refused := v.refuse("tenant")) is not None:
        return refused
    fields = await v.form()
    if fields is None:
        return v.forbidden()
    model, prompt = str(fields.get("model", "")), str(fields.get("prompt", "")).strip()
    secret = str(fields.get("key", "")).strip()
    again: dict[str, Any] = {"prompt": prompt, "chosen": model}
    if model not in _models(v):
        return _page(v, 400, error="Choose a model.", **again)
    if not prompt or len(prompt) > MAX_PROMPT_CHARS:
        return _page(v, 400, error=f"Write a prompt of 1 to {MAX_PROMPT_CHARS} characters.", **again)
    authenticator = v.state.authenticator
    try:
        key = await authenticator.authenticate(secret) if authenticator is not None else None
    except (AuthError, DatabaseError):
        key = None
    if key is None or key.tenant_id != v.tenant:
        return _page(v, 400, error="Give one of your own API keys: each answer is billed to it.", **again)
    tiers = [o.tier.value for o in v.state.catalog.offers if o.model == model and o.tier.value in key.tiers]
    async with _client(v, secret) as client:
        answers = await asyncio.gather(*(_ask(client, f"{model}:{tier}", tier, prompt) for tier in tiers))
    return _page(v, answers=answers, **again)


def _client(v: Visit, secret: str) -> httpx.AsyncClient:
    app = v.request.scope["app"]
    state = v.state

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        # what the server passes every request from the lifespan; an in-process transport must do it too
        await app({**scope, "state": {"gateway": state}}, receive, send)

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=with_state),
        base_url="http://tiergate.console",
        headers={"authorization": f"Bearer {secret}"},
        timeout=max(pool.timeouts.total_s for pool in state.settings.pools.values()),
    )


async def _ask(client: httpx.AsyncClient, model: str, tier: str, prompt: str) -> Answer:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    response = await client.post("/v1/chat/completions", json=body)
    try:
        reply = response.json()
    except ValueError:  # every answer of the gateway's is JSON; an answer that is not is shown as it came
        return Answer(tier, response.status_code, response.text[:300], None, None, None, None)
    if response.is_error:
        message = (
            reply.get("error", {}).get("message", response.text[:300]) if isinstance(reply, dict) else ""
        )
        return Answer(tier, response.status_code, message, None, None, None, None)
    usage = reply.get("usage") or {}
    cost = usage.get("cost_micros")
    return Answer(
        tier,
        response.status_code,
        str(reply["choices"][0]["message"].get("content") or ""),
        usage.get("reasoning_depth"),
        usage.get("cascade"),
        None if cost is None else format_micros(int(cost)),
        usage.get("total_tokens"),
    )
