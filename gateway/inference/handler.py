"""The inference hot path: parse, resolve the tier, call the pool, relay, meter once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from engines import EnginePool, PooledStream
from engines.affinity import affinity_key
from engines.loop_lag import LoopLag
from gateway.accounting.bookkeeper import Bookkeeper
from gateway.accounting.exchange import MeterSink, Outcome
from gateway.accounting.metrics import RequestMetrics
from gateway.accounting.usage_record import prompt_estimate
from gateway.deliberation import DepthUnreachable
from gateway.http.disconnect import CLIENT_CLOSED, DisconnectWatch
from gateway.http.door import LEASE, SLOT
from gateway.http.endpoints import Endpoint
from gateway.http.errors import GatewayError, from_refusal, gateway_overloaded
from gateway.http.relay import RelayEnd, StreamRelay
from gateway.http.request_id import request_id_of
from gateway.http.schemas import ChatRequest, check_request
from gateway.http.tier_queues import Shed, TierQueues
from gateway.inference.admission import Admitter, check_output_limit, estimate_tokens, pinned_output
from gateway.inference.body import json_object, read_body
from gateway.inference.cascade import cascade, cascade_estimate, refuse_for_cascade
from gateway.inference.catalog import Catalog, Offer
from gateway.inference.deliberate import deliberate, deliberation_estimate, deliberation_plan, depth_refusal
from gateway.inference.meter import Accounts, Admitted, Meter
from gateway.keys import ApiKey
from gateway.limits import Concurrency, concurrency_refusal
from gateway.refusals import Refusal
from gateway.tiers import engine_priority
from pricing import PriceBook

if TYPE_CHECKING:
    from gateway.accounting.tracing import EngineCall, RequestTrace, Tracing

__all__ = ["InferenceProxy"]

_TIER_HEADER = "x-tiergate-tier"


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
        metrics: RequestMetrics | None = None,
        queues: TierQueues | None = None,
        priority_pools: frozenset[str] = frozenset(),
        tracing: Tracing | None = None,
        concurrency: Concurrency | None = None,
        waits: LoopLag | None = None,
    ) -> None:
        self._queues = queues  # priority per tier
        self._waits = waits  # told each request's own wait before its engine call (the door may aim at it)
        self._concurrency = concurrency if concurrency is not None else Concurrency()  # keys' in flight
        self._priority_pools = priority_pools  # pools told each request's priority
        self._accounts = Accounts(tuple(sinks), admitter, book, bookkeeper, metrics)
        self._catalog = catalog
        self._pools = pools
        self._max_body = max_body_bytes
        self._tracing = tracing  # None: tracing is off

    @property
    def price_book(self) -> PriceBook | None:
        return self._accounts.book

    @property
    def admitter(self) -> Admitter:
        return self._accounts.admitter

    async def handle(self, request: Request, endpoint: Endpoint) -> Response:
        arrived = time.monotonic()
        key = await self._accounts.admitter.authenticate(request.headers)
        body = await self.read_body(request)
        return await self.serve(request, endpoint, key, json_object(body), len(body), arrived)

    async def read_body(self, request: Request) -> bytes:
        return await read_body(request, self._max_body)

    async def serve(
        self,
        request: Request,
        endpoint: Endpoint,
        key: ApiKey | None,
        data: dict[str, Any],
        size: int,
        arrived: float,
    ) -> Response:
        """Serve `data` (the request's JSON object; `size` bytes of prompt and parameters, for estimates)
        for `key`, authenticated when `arrived`."""
        if self._tracing is None:  # tracing off: this check is all it costs
            return await self._serve(request, endpoint, key, data, size, arrived, None)
        trace = self._tracing.request(request.headers, _operation(endpoint), arrived)
        try:
            return await self._serve(request, endpoint, key, data, size, arrived, trace)
        except BaseException as exc:
            trace.refused(*_failure(exc))  # refused before its meter began; else the meter ended it
            raise

    async def _serve(
        self,
        request: Request,
        endpoint: Endpoint,
        key: ApiKey | None,
        data: dict[str, Any],
        size: int,
        arrived: float,
        trace: RequestTrace | None,
    ) -> Response:
        checked = check_request(endpoint.shape, data)
        source = data.get("messages") if endpoint.chat else data.get("prompt")
        offer, difficulty = self._catalog.resolve(
            checked.model,
            request.headers.get(_TIER_HEADER),
            checked.reasoning_effort,
            source,
            key.tiers if key is not None else None,
        )
        started_at = time.time()
        plan = estimate = None
        check_output_limit(checked, offer)
        if key is not None:
            self._accounts.admitter.permit(key, offer)
            estimate = estimate_tokens(size, checked, offer)
        route = offer.cascade
        if route is not None:  # the fast stage, then (perhaps) the whole deliberation: both reserved
            chat = checked if isinstance(checked, ChatRequest) else None
            refuse_for_cascade(chat)
            assert chat is not None and route.deliberate.deliberation is not None
            try:
                plan = deliberation_plan(
                    route.deliberate.deliberation,
                    chat,
                    prompt_estimate(size),
                    route.deliberate,
                    request.headers,
                )
            except DepthUnreachable as exc:
                raise depth_refusal(exc, chat) from None
            estimate = cascade_estimate(
                estimate_tokens(size, checked, offer),
                route.settings.samples,
                deliberation_estimate(prompt_estimate(size), plan),
            )
        elif offer.deliberation is not None and isinstance(checked, ChatRequest):
            prompt = prompt_estimate(size)
            try:
                plan = deliberation_plan(offer.deliberation, checked, prompt, offer, request.headers)
                estimate = deliberation_estimate(prompt, plan)
            except DepthUnreachable as exc:
                if difficulty is None or (key is not None and "fast" not in key.tiers):
                    raise depth_refusal(exc, checked) from None
                # the auto tier chose depth the request's bound cannot hold: the fast tier answers it
                offer = self._catalog.resolve(offer.model, "fast", None)[0]
                difficulty = replace(difficulty, tier="fast", reasons=(*difficulty.reasons, "max_tokens"))
        priority_class = key.priority_class if key is not None else "standard"
        if key is not None and key.max_concurrent is not None:  # before queues and reservations, as cheap
            lease = self._concurrency.take(key.id, key.max_concurrent)
            if lease is None:
                if self._accounts.metrics is not None:
                    self._accounts.metrics.refused("concurrency", offer.tier.value)
                raise concurrency_refusal(key.max_concurrent)
            request.scope[LEASE] = lease  # released by gateway.http.dispatch at the request's end
        queued_s = 0.0
        if self._queues is not None:  # before any reservation: a request shed here has cost nothing
            try:
                slot = await self._queues.enter(offer.tier.value, priority_class)
            except Shed as exc:
                raise gateway_overloaded(exc.retry_after_s) from None
            if slot is not None:
                request.scope[SLOT] = slot  # released by gateway.http.dispatch at the request's end
                queued_s = slot.waited_s  # in its tier's queue: a wait by policy, not the loop's
        admission = hold = None
        if key is not None and estimate is not None:
            admission, hold = await self._accounts.admitter.admit_and_reserve(
                key, offer, estimate, started_at
            )
        data["model"] = offer.engine_model
        if checked.service_tier is not None:  # served as asked by whichever tier the model id chose
            del data["service_tier"]
        if offer.pool in self._priority_pools:  # the engine schedules the fast tier first (vLLM `priority`)
            data["priority"] = engine_priority(offer.tier, priority_class)
        pinned = pinned_output(checked, offer) if route is None else None  # a cascade pins its fast stage
        if pinned is not None:  # what was reserved is what the engine is told
            data[pinned[0]] = pinned[1]
        streaming = checked.streaming
        pool = self._pools[offer.pool]
        request_id = request_id_of(request.scope)
        admitted = Admitted(
            request_id,
            endpoint,
            offer,
            key,
            admission,
            hold,
            streaming,
            size,
            source,
            started_at=started_at,
            arrived=arrived,
            reasoning_budget=_reasoning_budget(data) if plan is None else None,
        )
        if self._waits is not None:  # the gateway's own part of its time to first byte ends about here
            self._waits.waited(time.monotonic() - arrived - queued_s)
        meter = Meter(admitted, self._accounts, pool, trace)
        if trace is not None:
            trace.resolved(checked.model, offer.public_id, offer.tier.value, offer.pool, request_id)
        headers = [(b"x-tiergate-tier", offer.tier.value.encode())]
        if difficulty is not None:  # the auto tier says why it chose
            reasons = ",".join(difficulty.reasons) or "none"
            headers.append((b"x-tiergate-auto", f"score={difficulty.score:.2f}; reasons={reasons}".encode()))
        if admission is not None:
            headers.extend(admission.headers())
        if route is not None and plan is not None and isinstance(checked, ChatRequest):
            pools = (pool, self._pools[route.deliberate.pool])
            return await cascade(
                request,
                endpoint,
                checked,
                data,
                offer,
                plan,
                pools,
                lambda used: Meter(admitted, self._accounts, used, trace),
                request_id,
                headers,
            )
        if plan is not None:
            return await deliberate(
                request,
                data,
                offer,
                plan,
                pool,
                meter,
                request_id,
                streaming=streaming,
                include_usage=checked.wants_usage,
                headers=headers,
            )
        if streaming:  # always ask for usage: the gateway meters every stream, asked or not
            data["stream_options"] = {**(data.get("stream_options") or {}), "include_usage": True}
        payload = orjson.dumps(data)
        affinity = affinity_key(data, chat=endpoint.chat)
        watch = DisconnectWatch(request.receive)
        call = trace.call(pool.name, offer.engine_model, kind="relay") if trace is not None else None
        meter.sent()
        try:
            if streaming:
                stream = await pool.stream(
                    endpoint.path,
                    payload,
                    request_id=request_id,
                    affinity=affinity,
                    headers=call.headers if call is not None else (),
                )
            else:
                reply = await pool.complete(
                    endpoint.path,
                    payload,
                    request_id=request_id,
                    affinity=affinity,
                    headers=call.headers if call is not None else (),
                )
        except BaseException as exc:
            if call is not None:
                call.failed(exc)
            return await meter.fail(exc, watch)  # the one ending of a request cut before its answer
        watch.stop()
        reply_id = endpoint.reply_id(request_id)
        if streaming:
            return _relay(stream, meter, offer, reply_id, checked.wants_usage, headers, call)
        if call is not None:
            call.answered(reply.replica, reply.usage)
        answer = reply.payload
        answer["id"] = reply_id  # an engine's own id when it did not make it of our x-request-id
        answer["model"] = offer.public_id
        exchange = meter.exchange(Outcome.OK, 200, reply.replica, reply.usage, reply=answer)
        usage = answer.get("usage")
        if isinstance(usage, dict):
            usage.update(meter.cost_fields(exchange))
        await meter.done(exchange)  # durable before the client has its answer
        response = Response(orjson.dumps(answer), media_type="application/json")
        response.raw_headers.extend(headers)
        return response


def _reasoning_budget(data: dict[str, Any]) -> int | None:
    """The reasoning a relayed request's client asked the engine for, over all its choices
    (`thinking_token_budget` times `n`), for the depth audit; None when it asked for none."""
    budget, n = data.get("thinking_token_budget"), data.get("n", 1)
    if type(budget) is not int or budget < 0:  # none (the common case), or one the engine will refuse
        return None
    return budget * (n if type(n) is int and n > 0 else 1)


def _relay(
    stream: PooledStream,
    meter: Meter,
    offer: Offer,
    reply_id: str,
    include_usage: bool,
    headers: list[tuple[bytes, bytes]],
    call: EngineCall | None,
) -> StreamRelay:
    async def on_end(end: RelayEnd) -> None:
        # a client that left mid-stream is a 499 in the logs and metrics, though its stream began with a 200
        status = CLIENT_CLOSED if end.outcome is Outcome.CLIENT_DISCONNECTED else 200
        if call is not None:
            if end.outcome is Outcome.OK:
                call.answered(stream.replica.url, stream.usage)
            else:
                call.failed(end.error or end.outcome.value, stream.replica.url)
        await meter.done(
            meter.exchange(end.outcome, status, stream.replica.url, stream.usage, stream, end.first_event_at)
        )

    rewrite = None
    if offer.engine_model != offer.public_id:
        rewrite = (_model_field(offer.engine_model), _model_field(offer.public_id))

    def on_usage(payload: dict[str, Any]) -> bytes:
        """The final usage chunk, with the public model and the request's cost."""
        exchange = meter.exchange(Outcome.OK, 200, stream.replica.url, stream.usage, stream, None)
        payload["id"] = reply_id
        payload["model"] = offer.public_id
        usage = payload.get("usage")
        if isinstance(usage, dict):
            usage.update(meter.cost_fields(exchange))
        return orjson.dumps(payload)

    return StreamRelay(
        stream,
        include_usage=include_usage,
        reply_id=reply_id,
        model_rewrite=rewrite,
        headers=headers,
        on_end=on_end,
        on_usage=on_usage if meter.prices else None,
    )


def _operation(endpoint: Endpoint) -> str:
    """The GenAI operation a request is (`gen_ai.operation.name`): the Responses API is served as chat."""
    return "chat" if endpoint.chat else "text_completion"


def _failure(exc: BaseException) -> tuple[int, str]:
    """The status and error code a request that raised `exc` is answered with (gateway.http.errors)."""
    if isinstance(exc, Refusal):
        exc = from_refusal(exc)
    if isinstance(exc, GatewayError):
        return exc.status, exc.code or exc.error_type
    if isinstance(exc, asyncio.CancelledError):
        return CLIENT_CLOSED, "cancelled"
    return 500, "internal_error"


def _model_field(name: str) -> bytes:
    return b'"model":' + orjson.dumps(name)
