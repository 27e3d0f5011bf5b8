"""The inference hot path: parse, resolve the tier, call the pool, relay, meter once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from engines import EngineClient, EngineError, EnginePool, EngineRejected, PooledStream, Usage
from gateway.admission import Admitter, estimate_tokens
from gateway.catalog import Catalog, Offer
from gateway.disconnect import DisconnectWatch
from gateway.errors import GatewayError, from_engine_error
from gateway.keys import ApiKey
from gateway.ledger import Bookkeeper
from gateway.limits import Admission
from gateway.metering import Exchange, MeterSink, Outcome
from gateway.relay import RelayEnd, StreamRelay
from gateway.request_id import request_id_of
from gateway.schemas import ChatRequest, CompletionRequest, InferenceRequest, check_request
from gateway.usage_record import Counted, generated_chars, usage_record
from pricing import Charge, LedgerRow, NotPriced, PriceBook, UsageRecord, rate, usage_cost_fields

__all__ = ["CHAT", "COMPLETIONS", "Endpoint", "InferenceProxy"]

log = logging.getLogger("tiergate.metering")

_TIER_HEADER = "x-tiergate-tier"
_COUNT_TIMEOUT_S = 1.0  # how long a cut request's record may wait for the engine's token counts
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
        admitter: Admitter,
        book: PriceBook | None,
        bookkeeper: Bookkeeper | None,
        *,
        max_body_bytes: int,
    ) -> None:
        self._admitter = admitter
        self._book = book
        self._bookkeeper = bookkeeper
        self._catalog = catalog
        self._pools = pools
        self._sinks = tuple(sinks)
        self._max_body = max_body_bytes

    @property
    def price_book(self) -> PriceBook | None:
        return self._book

    async def handle(self, request: Request, endpoint: Endpoint) -> Response:
        key = await self._admitter.authenticate(request.headers)
        body = await _read_body(request, self._max_body)
        data = _json_object(body)
        checked = check_request(endpoint.shape, data)
        offer = self._catalog.resolve(
            checked.model, request.headers.get(_TIER_HEADER), checked.reasoning_effort
        )
        admission = None
        if key is not None:
            self._admitter.permit(key, offer)
            admission = await self._admitter.admit(
                key, offer, estimate_tokens(len(body), checked, offer.max_model_len)
            )
        data["model"] = offer.engine_model
        streaming = checked.streaming
        if streaming:  # always ask for usage: the gateway meters every stream, asked or not
            data["stream_options"] = {**(data.get("stream_options") or {}), "include_usage": True}
        payload = orjson.dumps(data)
        pool = self._pools[offer.pool]
        request_id = request_id_of(request.scope)
        meter = _Meter(
            self._sinks,
            self._admitter,
            self._book,
            self._bookkeeper,
            request_id,
            endpoint,
            offer,
            streaming,
            key,
            admission,
            len(body),
            pool,
            data.get("messages") if endpoint is CHAT else data.get("prompt"),
        )
        watch = DisconnectWatch(request.receive)
        try:
            if streaming:
                stream = await pool.stream(endpoint.path, payload, request_id=request_id)
            else:
                reply = await pool.complete(endpoint.path, payload, request_id=request_id)
        except asyncio.CancelledError:
            if not watch.absorb():  # the gateway is shutting down: the record still goes to the journal
                await asyncio.shield(meter.done(meter.exchange(Outcome.ABORTED, _CLIENT_CLOSED)))
                raise
            await meter.done(meter.exchange(Outcome.CLIENT_DISCONNECTED, _CLIENT_CLOSED))
            return Response(status_code=_CLIENT_CLOSED)  # nobody is listening
        except EngineError as exc:
            watch.stop()
            error = from_engine_error(exc)
            outcome = Outcome.REJECTED if isinstance(exc, EngineRejected) else Outcome.ENGINE_FAILED
            await meter.done(meter.exchange(outcome, error.status, exc.replica))
            raise error from None
        except Exception:
            watch.stop()
            # a fault of ours: still one record, then a 500 envelope
            await meter.done(meter.exchange(Outcome.ENGINE_FAILED, 500))
            raise
        watch.stop()
        headers = [(b"x-tiergate-tier", offer.tier.value.encode())]
        if admission is not None:
            headers.extend(admission.headers())
        if streaming:
            return _relay(stream, meter, offer, checked.wants_usage, headers)
        answer = reply.payload
        answer["model"] = offer.public_id
        exchange = meter.exchange(Outcome.OK, 200, reply.replica, reply.usage, reply=answer)
        usage = answer.get("usage")
        if isinstance(usage, dict):
            usage.update(meter.cost_fields(exchange))
        await meter.done(exchange)  # durable before the client has its answer
        response = Response(orjson.dumps(answer), media_type="application/json")
        response.raw_headers.extend(headers)
        return response


def _relay(
    stream: PooledStream, meter: _Meter, offer: Offer, include_usage: bool, headers: list[tuple[bytes, bytes]]
) -> StreamRelay:
    async def on_end(end: RelayEnd) -> None:
        await meter.done(
            meter.exchange(end.outcome, 200, stream.replica.url, stream.usage, stream, end.first_event_at)
        )

    rewrite = None
    if offer.engine_model != offer.public_id:
        rewrite = (_model_field(offer.engine_model), _model_field(offer.public_id))

    def on_usage(payload: dict[str, Any]) -> bytes:
        """The final usage chunk, with the public model and the request's cost."""
        exchange = meter.exchange(Outcome.OK, 200, stream.replica.url, stream.usage, stream, None)
        payload["model"] = offer.public_id
        usage = payload.get("usage")
        if isinstance(usage, dict):
            usage.update(meter.cost_fields(exchange))
        return orjson.dumps(payload)

    return StreamRelay(
        stream,
        include_usage=include_usage,
        model_rewrite=rewrite,
        headers=headers,
        on_end=on_end,
        on_usage=on_usage if meter.prices else None,
    )


class _Meter:
    """Builds the one `Exchange` of a request, hands it to the sinks, and settles the request's token
    reservation to what it really used."""

    __slots__ = (
        "_admission",
        "_admitter",
        "_body_size",
        "_book",
        "_bookkeeper",
        "_charge",
        "_clock",
        "_endpoint",
        "_key",
        "_offer",
        "_pool",
        "_request_id",
        "_sinks",
        "_source",
        "_started",
        "_streamed",
    )

    def __init__(
        self,
        sinks: tuple[MeterSink, ...],
        admitter: Admitter,
        book: PriceBook | None,
        bookkeeper: Bookkeeper | None,
        request_id: str,
        endpoint: Endpoint,
        offer: Offer,
        streamed: bool,
        key: ApiKey | None,
        admission: Admission | None,
        body_size: int,
        pool: EnginePool,
        source: Any,
    ) -> None:
        self._pool = pool
        self._source = source  # the request's messages or prompt, kept to count a cut request exactly
        self._sinks = sinks
        self._admitter = admitter
        self._book = book
        self._bookkeeper = bookkeeper
        self._charge: Charge | None = None
        self._request_id = request_id
        self._endpoint = endpoint
        self._offer = offer
        self._streamed = streamed
        self._key = key
        self._admission = admission
        self._body_size = body_size
        self._started = time.time()
        self._clock = time.monotonic()

    @property
    def prices(self) -> bool:
        return self._book is not None

    def exchange(
        self,
        outcome: Outcome,
        status: int,
        replica: str = "",
        usage: Usage | None = None,
        stream: PooledStream | None = None,
        first_event_at: float | None = None,
        reply: dict[str, Any] | None = None,
    ) -> Exchange:
        offer = self._offer
        return Exchange(
            request_id=self._request_id,
            endpoint=self._endpoint.name,
            key_id=self._key.id if self._key is not None else None,
            tenant=self._key.tenant_id if self._key is not None else None,
            model=offer.model,
            served_model=offer.engine_model,
            tier=offer.tier,
            pool=offer.pool,
            replica=replica,
            streamed=self._streamed,
            outcome=outcome,
            status=status,
            usage=usage,
            tally=stream.tally if stream is not None else None,
            reply=reply,
            body_size=self._body_size,
            started_at=self._started,
            first_token_s=first_event_at - self._clock if first_event_at is not None else None,
            duration_s=time.monotonic() - self._clock,
        )

    async def done(self, exchange: Exchange) -> None:
        """The request's end, once: sinks told, its token reservation settled, its ledger row durable."""
        for sink in self._sinks:
            sink.record(exchange)
        reservation = self._admission.reservation if self._admission is not None else None
        if reservation is not None:
            self._admitter.settle(reservation, _used_tokens(exchange, self._body_size))
        if self._bookkeeper is not None:
            counted = await self._counted(exchange) if exchange.usage is None else None
            record = usage_record(exchange, counted=counted)
            charge = self._rated(record)
            if charge is not None:
                await self._bookkeeper.record(LedgerRow(record, charge))

    async def _counted(self, exchange: Exchange) -> Counted | None:
        """A cut request's exact counts, from the engine's own tokenizer; None if it does not answer soon."""
        replica = self._pool.replica(exchange.replica)
        content_chars, reasoning_chars = generated_chars(exchange)
        if replica is None or not (content_chars or reasoning_chars) or exchange.tally is None:
            return None
        tally, engine, model = exchange.tally, replica.engine, self._offer.engine_model
        prompt = _count_prompt(engine, model, self._source, chat=self._endpoint is CHAT)
        content = "".join(tally.text(index) for index in tally.content)
        reasoning = "".join(tally.reasoning_text(index) for index in tally.reasoning)
        try:
            async with asyncio.timeout(_COUNT_TIMEOUT_S):
                counts = await asyncio.gather(
                    prompt,
                    engine.count_tokens(model, prompt=content),
                    engine.count_tokens(model, prompt=reasoning),
                )
        except TimeoutError:
            return None
        if any(count is None for count in counts):
            return None
        prompt_count, content_count, reasoning_count = (int(count or 0) for count in counts)
        return Counted(prompt_count, content_count if content else 0, reasoning_count if reasoning else 0)

    def cost_fields(self, exchange: Exchange) -> dict[str, object]:
        """`usage.cost` and friends for the client (OpenRouter's shape), rated once per request."""
        charge = self._rated(usage_record(exchange))
        return usage_cost_fields(charge) if charge is not None else {}

    def _rated(self, record: UsageRecord) -> Charge | None:
        if self._book is None:
            return None
        if self._charge is None:
            try:
                charge = rate(record, self._book)
            except NotPriced:  # the book was checked at start: only a request from before its first version
                log.warning("no price in force for %s:%s", record.model, record.tier)
                return None
            if record.outcome != Outcome.OK and not (record.prompt_tokens or record.completion_tokens):
                # served nothing: a row that says so, and no charge, not even the per-request fee
                charge = replace(charge, lines=(), total=0)
            self._charge = charge
        return self._charge


async def _count_prompt(engine: EngineClient, model: str, source: Any, *, chat: bool) -> int | None:
    """A request's prompt tokens by the engine's tokenizer: chat messages with their template, a text, a
    list of texts (a batch: summed), or token ids (counted as they are)."""
    if chat:
        return await engine.count_tokens(model, messages=source) if isinstance(source, list) else None
    if isinstance(source, str):
        return await engine.count_tokens(model, prompt=source)
    if isinstance(source, list) and all(isinstance(item, int) for item in source):
        return len(source)
    if isinstance(source, list) and all(isinstance(item, list) for item in source):
        return sum(len(item) for item in source)
    if isinstance(source, list) and all(isinstance(item, str) for item in source):
        counts = await asyncio.gather(*(engine.count_tokens(model, prompt=item) for item in source))
        return None if any(count is None for count in counts) else sum(count or 0 for count in counts)
    return None


def _used_tokens(exchange: Exchange, body_size: int) -> int:
    """What a request consumed, for its token limit: the engine's count, else an estimate of what a cut
    stream generated (the prompt was processed too), else nothing (the reservation is released)."""
    if exchange.usage is not None:
        return exchange.usage.total_tokens
    tally = exchange.tally
    if tally is not None and (tally.content or tally.reasoning):
        generated = sum(
            len(text) for parts in (*tally.content.values(), *tally.reasoning.values()) for text in parts
        )
        return (body_size + generated) // 4
    return 0


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
