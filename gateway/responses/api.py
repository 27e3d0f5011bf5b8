"""The Responses API's routes: create (served by the inference proxy as a chat completion, through the same
keys, limits, budgets, tiers, deliberation, ledger and metrics, as endpoint `responses`), retrieve, delete,
and a stored response's input items."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.database import DatabaseError
from gateway.http.endpoints import RESPONSES
from gateway.http.errors import GatewayError
from gateway.http.request_id import request_id_of
from gateway.inference.body import json_object
from gateway.inference.handler import InferenceProxy
from gateway.keys import ApiKey
from gateway.responses.events import ResponseEvents
from gateway.responses.output import Shell
from gateway.responses.request import chat_body, check_responses_request, input_items, messages_of
from gateway.responses.store import ResponseStore, StoredResponse

__all__ = ["ResponsesAPI"]

log = logging.getLogger("tiergate.responses")


class ResponsesAPI:
    def __init__(self, proxy: InferenceProxy, store: ResponseStore | None) -> None:
        self._proxy = proxy
        self._store = store  # None: storing is off (responses.store: false)

    async def create(self, request: Request) -> Response:
        arrived = time.monotonic()
        key = await self._proxy.admitter.authenticate(request.headers)
        body = await self._proxy.read_body(request)
        checked = check_responses_request(json_object(body))
        stored = checked.stored and self._store is not None
        if checked.store is True and self._store is None:
            raise _storage_off("store")
        tenant = _tenant(key)
        history: list[dict[str, Any]] = []
        if checked.previous_response_id is not None:
            history = await self._conversation(tenant, checked.previous_response_id)
        items = input_items(checked)
        data = chat_body(checked, history, items)
        size = len(body) + (len(orjson.dumps(history)) if history else 0)
        answer = await self._proxy.serve(request, RESPONSES, key, data, size, arrived)
        shell = Shell(RESPONSES.reply_id(request_id_of(request.scope)), checked, stored=stored)
        numbered = _numbered(shell.id, items)

        async def keep(response: dict[str, Any]) -> None:
            """Store the response before its client has it; a store that fails loses no answer: the
            response goes out, saying `store: false` (and the failure is logged, without its text)."""
            if not stored or self._store is None:
                return
            turn = messages_of([*items, *(_as_input(item) for item in response["output"])])
            try:
                await self._store.save(tenant, response, numbered, turn)
            except DatabaseError as exc:
                log.warning("response %s answered but not stored: %s", response["id"], exc)
                response["store"] = False

        if checked.streaming:
            return ResponseStream(answer, ResponseEvents(shell, checked.model), keep)
        if answer.status_code != 200:
            return answer  # an error envelope, as chat's
        result = shell.from_chat(orjson.loads(answer.body))
        await keep(result)  # retrievable before the client has its answer
        response = Response(orjson.dumps(result), media_type="application/json")
        response.raw_headers.extend(_extra_headers(answer))
        return response

    async def retrieve(self, request: Request) -> Response:
        key = await self._proxy.admitter.authenticate(request.headers)
        if request.query_params.get("stream") in ("true", "1"):
            raise GatewayError(
                400,
                "Unsupported parameter: 'stream': a stored response is retrieved whole.",
                code="unsupported_parameter",
                param="stream",
            )
        stored = await self._stored(_tenant(key), request.path_params["response_id"], None)
        return _json(stored.response)

    async def delete(self, request: Request) -> Response:
        key = await self._proxy.admitter.authenticate(request.headers)
        response_id = request.path_params["response_id"]
        if self._store is None or not await self._store.delete(_tenant(key), response_id):
            raise _not_found(response_id, None)
        return _json({"id": response_id, "object": "response.deleted", "deleted": True})

    async def input_items(self, request: Request) -> Response:
        key = await self._proxy.admitter.authenticate(request.headers)
        stored = await self._stored(_tenant(key), request.path_params["response_id"], None)
        query = request.query_params
        limit_text = query.get("limit", "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
            raise GatewayError(
                400, "Invalid 'limit': an integer from 1 to 100.", code="invalid_value", param="limit"
            )
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise GatewayError(400, "Invalid 'order': asc or desc.", code="invalid_value", param="order")
        items = stored.input_items if order == "asc" else stored.input_items[::-1]
        after = query.get("after")
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise GatewayError(
                    400, f"Invalid 'after': no input item {after!r}.", code="invalid_value", param="after"
                )
            items = items[ids.index(after) + 1 :]
        page = items[: int(limit_text)]
        return _json(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > len(page),
            }
        )

    async def _stored(self, tenant: str, response_id: str, param: str | None) -> StoredResponse:
        if self._store is None:
            raise _storage_off(param or "response_id")
        stored = await self._store.get(tenant, response_id)
        if stored is None:
            raise _not_found(response_id, param)
        return stored

    async def _conversation(self, tenant: str, response_id: str) -> list[dict[str, Any]]:
        if self._store is None:
            raise _storage_off("previous_response_id")
        conversation = await self._store.conversation(tenant, response_id)
        if conversation is None:
            raise _not_found(response_id, "previous_response_id")
        return conversation


class ResponseStream(Response):
    """A chat completion's stream (the proxy's response: the engine relayed, or a deliberation) as the
    Responses API's events; an error answered before the stream opened passes as it is."""

    def __init__(
        self, inner: Response, events: ResponseEvents, keep: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
        self.status_code = inner.status_code
        self.background = None
        self.raw_headers = inner.raw_headers
        self._inner = inner
        self._events = events
        self._keep = keep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        events = self._events
        buffer = b""
        passing = False  # the inner response is an error envelope, not a stream
        ended = False
        opening = b""  # response.created and .in_progress: sent with the first events, in one write

        async def translated(message: Message) -> None:
            nonlocal buffer, passing, ended, opening
            if message["type"] == "http.response.start":
                passing = message["status"] != 200
                if not passing:
                    opening = events.opening()
                await send(message)
                return
            if passing or message["type"] != "http.response.body":
                await send(message)
                return
            body = message.get("body", b"")
            buffer = buffer + body if buffer else body
            out = [opening] if opening else []
            opening = b""
            while (cut := buffer.find(b"\n\n")) >= 0:
                out.append(self._event(buffer[:cut]))
                buffer = buffer[cut + 2 :]
            more = message.get("more_body", False)
            if not more and not ended:
                ended = True
                if events.final is None:  # the stream ended without [DONE] or an error: closed as it stands
                    out.append(events.completed())
                assert events.final is not None
                await self._keep(events.final)  # retrievable before the stream ends
                out.append(events.final_event())
            if out or not more:
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": more})

        await self._inner(scope, receive, translated)

    def _event(self, event: bytes) -> bytes:
        event = event.strip(b"\r\n")
        if event.startswith(b":"):
            return event + b"\n\n"  # a keep-alive comment: the connection stays up while samples run
        if not event.startswith(b"data: "):
            return b""
        data = event[6:]
        if data == b"[DONE]":
            return self._events.completed()
        payload = orjson.loads(data)
        return self._events.feed(payload) if isinstance(payload, dict) else b""


def _tenant(key: ApiKey | None) -> str:
    return key.tenant_id if key is not None else ""  # authentication off: one anonymous tenant


def _numbered(response_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items with ids, for GET .../input_items (an item sent with its own id keeps it)."""
    suffix = response_id.removeprefix("resp_")
    return [{"id": item.get("id") or f"in_{suffix}_{index}", **item} for index, item in enumerate(items)]


def _as_input(item: dict[str, Any]) -> dict[str, Any]:
    """An output item as the input item that continues the conversation."""
    if item["type"] == "message":
        return {"type": "message", "role": "assistant", "content": item["content"]}
    return item


def _extra_headers(answer: Response) -> list[tuple[bytes, bytes]]:
    return [
        (name, value)
        for name, value in answer.raw_headers
        if name not in (b"content-length", b"content-type")
    ]


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _not_found(response_id: str, param: str | None) -> GatewayError:
    return GatewayError(
        404, f"Response with id '{response_id}' not found.", code="response_not_found", param=param
    )


def _storage_off(param: str) -> GatewayError:
    return GatewayError(
        400,
        f"Unsupported parameter: '{param}': this gateway stores no responses (responses.store: false).",
        code="unsupported_parameter",
        param=param,
    )
