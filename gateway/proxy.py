"""The inference hot path: parse, resolve the tier, call the pool, relay, meter once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from engines import EngineError, EnginePool, EngineRejected, PooledStream, Usage
from gateway.catalog import Catalog, Offer
from gateway.disconnect import DisconnectWatch
from gateway.errors import GatewayError, from_engine_error
from gateway.metering import Exchange, MeterSink, Outcome
from gateway.relay import RelayEnd, StreamRelay
from gateway.request_id import request_id_of
from gateway.schemas import ChatRequest, CompletionRequest, InferenceRequest, check_request

__all__ = ["CHAT", "COMPLETIONS", "Endpoint", "InferenceProxy"]

_TIER_HEADER = "x-tiergate-tier"
_CLIENT_CLOSED = 499  # nginx's "client closed request": logged, never seen by the client


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    path: str
    shape: type[InferenceRequest]


CHAT = Endpoint("chat", "/v1/chat/completions", ChatRequest)
COMPLETIONS = Endpoint("completions", "/v1/completions", CompletionRequest)


class InferenceProxy:
    def __init__(
        self,
        catalog: Catalog,
        pools: Mapping[str, EnginePool],
        sinks: Sequence[MeterSink],
        *,
        max_body_bytes: int,
    ) -> None:
        self._catalog = catalog
        self._pools = pools
        self._sinks = tuple(sinks)
        self._max_body = max_body_bytes

    async def handle(self, request: Request, endpoint: Endpoint) -> Response:
        data = _json_object(await _read_body(request, self._max_body))
        checked = check_request(endpoint.shape, data)
        offer = self._catalog.resolve(
            checked.model, request.headers.get(_TIER_HEADER), checked.reasoning_effort
        )
        data["model"] = offer.engine_model
        streaming = checked.streaming
        if streaming:  # always ask for usage: the gateway meters every stream, asked or not
            data["stream_options"] = {**(data.get("stream_options") or {}), "include_usage": True}
        payload = orjson.dumps(data)
        pool = self._pools[offer.pool]
        request_id = request_id_of(request.scope)
        meter = _Meter(self._sinks, request_id, endpoint, offer, streamed=streaming)
        watch = DisconnectWatch(request.receive)
        try:
            if streaming:
                stream = await pool.stream(endpoint.path, payload, request_id=request_id)
            else:
                reply = await pool.complete(endpoint.path, payload, request_id=request_id)
        except asyncio.CancelledError:
            if not watch.absorb():
                meter.record(Outcome.ABORTED, _CLIENT_CLOSED)  # the gateway is shutting down
                raise
            meter.record(Outcome.CLIENT_DISCONNECTED, _CLIENT_CLOSED)
            return Response(status_code=_CLIENT_CLOSED)  # nobody is listening
        except EngineError as exc:
            watch.stop()
            raise meter.failed(exc) from None
        except Exception:
            watch.stop()
            meter.record(Outcome.ENGINE_FAILED, 500)  # a fault of ours: still one record, then a 500 envelope
            raise
        watch.stop()
        headers = [(b"x-tiergate-tier", offer.tier.value.encode())]
        if streaming:
            return _relay(stream, meter, offer, checked.wants_usage, headers)
        body = reply.payload
        body["model"] = offer.public_id
        meter.record(Outcome.OK, 200, reply.replica, reply.usage)
        response = Response(orjson.dumps(body), media_type="application/json")
        response.raw_headers.extend(headers)
        return response


def _relay(
    stream: PooledStream, meter: _Meter, offer: Offer, include_usage: bool, headers: list[tuple[bytes, bytes]]
) -> StreamRelay:
    def on_end(end: RelayEnd) -> None:
        meter.record(end.outcome, 200, stream.replica.url, stream.usage, stream, end.first_event_at)

    rewrite = None
    if offer.engine_model != offer.public_id:
        rewrite = (_model_field(offer.engine_model), _model_field(offer.public_id))
    return StreamRelay(
        stream, include_usage=include_usage, model_rewrite=rewrite, headers=headers, on_end=on_end
    )


class _Meter:
    """Builds the one `Exchange` of a request and hands it to the sinks."""

    __slots__ = ("_clock", "_endpoint", "_offer", "_request_id", "_sinks", "_started", "_streamed")

    def __init__(
        self, sinks: tuple[MeterSink, ...], request_id: str, endpoint: Endpoint, offer: Offer, streamed: bool
    ) -> None:
        self._sinks = sinks
        self._request_id = request_id
        self._endpoint = endpoint
        self._offer = offer
        self._streamed = streamed
        self._started = time.time()
        self._clock = time.monotonic()

    def record(
        self,
        outcome: Outcome,
        status: int,
        replica: str = "",
        usage: Usage | None = None,
        stream: PooledStream | None = None,
        first_event_at: float | None = None,
    ) -> None:
        offer = self._offer
        exchange = Exchange(
            request_id=self._request_id,
            endpoint=self._endpoint.name,
            model=offer.model,
            tier=offer.tier,
            pool=offer.pool,
            replica=replica,
            streamed=self._streamed,
            outcome=outcome,
            status=status,
            usage=usage,
            tally=stream.tally if stream is not None else None,
            started_at=self._started,
            first_token_s=first_event_at - self._clock if first_event_at is not None else None,
            duration_s=time.monotonic() - self._clock,
        )
        for sink in self._sinks:
            sink.record(exchange)

    def failed(self, exc: EngineError) -> GatewayError:
        error = from_engine_error(exc)
        outcome = Outcome.REJECTED if isinstance(exc, EngineRejected) else Outcome.ENGINE_FAILED
        self.record(outcome, error.status, exc.replica)
        return error


def _model_field(name: str) -> bytes:
    return b'"model":' + orjson.dumps(name)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise GatewayError(400, "The Content-Length header is not a number.", code="invalid_request")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"The request body is larger than the limit of {limit} bytes.", code="request_too_large"
    )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise GatewayError(
            400,
            "We could not parse the JSON body of your request. The body must be a JSON object"
            " sent with Content-Type: application/json.",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
    return data
