"""A cascade chat request: its fast stage (k samples in one `n=k` call, with logprobs), scored
(`deliberation/confidence.py`); delivered at or above the model's threshold, else the deliberate tier answers
the same request. One usage record for both stages (`Meter.cascade`), one ending, as for any request; a
stream sends keep-alives while the fast stage decides, then the chosen answer only."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from engines import EngineError, EnginePool, EngineReply, Usage
from engines.affinity import affinity_key
from gateway.accounting.exchange import Outcome
from gateway.deliberation import Chunks, DepthPlan
from gateway.deliberation.confidence import Confidence, score_samples
from gateway.http.disconnect import DisconnectWatch, ended_status
from gateway.http.endpoints import Endpoint
from gateway.http.errors import GatewayError, error_event, from_engine_error
from gateway.http.relay import DONE, SSE_HEADERS
from gateway.http.schemas import ChatRequest
from gateway.inference.admission import TokenEstimate, pinned_output
from gateway.inference.catalog import Offer
from gateway.inference.deliberate import DeliberationStream, deliberate
from gateway.inference.meter import CascadeMark, Meter
from gateway.refusals import Refusal
from gateway.tiers import Tier
from pricing import Cascade

__all__ = ["CASCADE_HEADER", "cascade", "cascade_estimate", "refuse_for_cascade"]

CASCADE_HEADER = "x-tiergate-cascade"
_KEEPALIVE = b": deciding\n\n"

MeterFor = Callable[[EnginePool], Meter]


def refuse_for_cascade(checked: ChatRequest | None) -> None:
    """What the cascade cannot honour, refused with a 400 naming it (never dropped in silence)."""
    if checked is None:
        raise Refusal(
            "invalid",
            "The cascade tier serves chat completions and responses; use the fast or deliberate tier here.",
            code="unsupported_parameter",
            param="model",
        )
    if (checked.n or 1) > 1:
        raise _unsupported(checked.param("n"), "the cascade draws its own fast samples to score one answer")
    extra = checked.model_extra or {}
    for field in ("tools", "functions"):
        if extra.get(field):
            raise _unsupported(
                checked.param(field), "a tool call has no final answer the cascade could score"
            )


def _unsupported(param: str, why: str) -> Refusal:
    return Refusal(
        "invalid",
        f"Unsupported parameter on the cascade tier: '{param}': {why}."
        " The fast and deliberate tiers take it.",
        code="unsupported_parameter",
        param=param,
    )


def cascade_estimate(fast: TokenEstimate, samples: int, deliberation: TokenEstimate) -> TokenEstimate:
    """The most a cascade may use: its k fast samples, then a whole deliberation."""
    return TokenEstimate(
        prompt=fast.prompt * samples + deliberation.prompt * deliberation.n,
        output=fast.output * samples + deliberation.output * deliberation.n,
        n=1,
    )


async def cascade(
    request: Request,
    endpoint: Endpoint,
    checked: ChatRequest,
    data: dict[str, Any],
    offer: Offer,
    plan: DepthPlan,
    pools: tuple[EnginePool, EnginePool],
    meter_for: MeterFor,
    request_id: str,
    headers: list[tuple[bytes, bytes]],
) -> Response:
    route = offer.cascade
    assert route is not None
    settings = route.settings
    body = {key: value for key, value in data.items() if key not in ("stream", "stream_options")}
    body.update(n=settings.samples, logprobs=True)  # the client's top_logprobs, if any, stay as asked
    pinned = pinned_output(checked, offer)
    if pinned is not None:  # what was reserved is what the engine is told (the deliberation pins its own)
        body[pinned[0]] = pinned[1]
    payload = orjson.dumps(body)
    affinity = affinity_key(body, chat=True)
    stage = _FastStage(endpoint.path, payload, affinity, request_id, pools[0], settings.samples)
    escalation = _Escalation(request, checked, data, offer, plan, pools[1], meter_for, request_id, headers)
    meter = meter_for(pools[0])
    if checked.streaming:
        return CascadeStream(stage, escalation, meter, checked, settings.threshold, settings.keepalive_s)
    watch = DisconnectWatch(request.receive)
    meter.sent()
    try:
        reply = await stage.call()
    except BaseException as exc:
        return await meter.fail(exc, watch)
    watch.stop()
    decision = stage.decide(reply, checked, settings.threshold)
    if decision.mark.record.escalated:
        return await escalation.run(decision.mark, streaming=False)
    meter.cascade = decision.mark
    answer = decision.answer(endpoint.reply_id(request_id), offer.public_id, checked)
    exchange = meter.exchange(Outcome.OK, 200, reply.replica, stage.usage(reply), reply=answer)
    answer["usage"] = {**(answer.get("usage") or {}), **meter.cost_fields(exchange)}
    await meter.done(exchange)  # durable before the client has its answer
    response = Response(orjson.dumps(answer), media_type="application/json")
    response.raw_headers.extend([*headers, decision.header()])
    return response


class _Decision:
    __slots__ = ("confidence", "mark", "reply")

    def __init__(self, reply: EngineReply, confidence: Confidence, mark: CascadeMark) -> None:
        self.reply = reply
        self.confidence = confidence
        self.mark = mark

    def header(self) -> tuple[bytes, bytes]:
        record = self.mark.record
        confidence = "none" if record.confidence is None else f"{record.confidence:.4f}"
        value = f"escalated={'true' if record.escalated else 'false'}; confidence={confidence}"
        return CASCADE_HEADER.encode(), f"{value}; threshold={record.threshold:.4f}".encode()

    def choice(self, checked: ChatRequest) -> dict[str, Any]:
        """The delivered sample, as choice 0; its logprobs only when the client asked for them."""
        choices = self.reply.payload.get("choices") or [{}]
        chosen = dict(choices[self.confidence.chosen])
        chosen["index"] = 0
        if not checked.logprobs:
            chosen["logprobs"] = None
        return chosen

    def answer(self, reply_id: str, model: str, checked: ChatRequest) -> dict[str, Any]:
        answer = dict(self.reply.payload)
        answer.update(id=reply_id, model=model, choices=[self.choice(checked)])
        return answer


class _FastStage:
    __slots__ = ("_affinity", "_path", "_payload", "_pool", "_request_id", "samples")

    def __init__(
        self, path: str, payload: bytes, affinity: str | None, request_id: str, pool: EnginePool, samples: int
    ) -> None:
        self._path, self._payload, self._affinity = path, payload, affinity
        self._request_id, self._pool, self.samples = request_id, pool, samples

    async def call(self) -> EngineReply:
        return await self._pool.complete(
            self._path, self._payload, request_id=self._request_id, affinity=self._affinity
        )

    def usage(self, reply: EngineReply) -> Usage | None:
        """The call's usage, its prompt billed once a sample: vLLM prefills each of the n sequences (as the
        deliberate tier's self-consistency is billed, docs/deliberation.md)."""
        usage = reply.usage
        if usage is None:
            return None
        k = self.samples
        return replace(usage, prompt_tokens=usage.prompt_tokens * k, cached_tokens=usage.cached_tokens * k)

    def decide(self, reply: EngineReply, checked: ChatRequest, threshold: float) -> _Decision:
        extra = checked.model_extra or {}
        response_format = extra.get("response_format")
        structured = isinstance(response_format, dict) and response_format.get("type") in (
            "json_object",
            "json_schema",
        )
        choices = reply.payload.get("choices")
        confidence = score_samples(choices if isinstance(choices, list) else [], structured=structured)
        usage = self.usage(reply) or Usage(0, 0)
        record = Cascade(
            escalated=confidence.score < threshold,
            confidence=round(confidence.score, 6),
            threshold=threshold,
            fast_prompt_tokens=usage.prompt_tokens,
            fast_cached_tokens=min(usage.cached_tokens, usage.prompt_tokens),
            fast_completion_tokens=usage.completion_tokens,
        )
        return _Decision(reply, confidence, CascadeMark(record, self.samples, confidence.signals()))


class _Escalation:
    """The deliberate tier answering the same request, under the cascade's name and record."""

    __slots__ = (
        "_checked",
        "_data",
        "_headers",
        "_meter_for",
        "_offer",
        "_plan",
        "_pool",
        "_request",
        "_rid",
    )

    def __init__(
        self,
        request: Request,
        checked: ChatRequest,
        data: dict[str, Any],
        offer: Offer,
        plan: DepthPlan,
        pool: EnginePool,
        meter_for: MeterFor,
        request_id: str,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._request, self._checked, self._data, self._offer = request, checked, data, offer
        self._plan, self._pool, self._meter_for, self._rid, self._headers = (
            plan,
            pool,
            meter_for,
            request_id,
            headers,
        )

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self._headers

    @property
    def request_id(self) -> str:
        return self._rid

    @property
    def public_id(self) -> str:
        return self._offer.public_id

    def _start(self, mark: CascadeMark) -> tuple[Meter, Offer, dict[str, Any], list[tuple[bytes, bytes]]]:
        route = self._offer.cascade
        assert route is not None
        meter = self._meter_for(self._pool)
        meter.cascade = mark
        # the deliberate tier's settings and engine, answering as `model:cascade`
        offer = replace(route.deliberate, tier=Tier.CASCADE)
        data = {**self._data, "model": route.deliberate.engine_model}
        record = mark.record
        confidence = "none" if record.confidence is None else f"{record.confidence:.4f}"
        header = f"escalated=true; confidence={confidence}; threshold={record.threshold:.4f}"
        return meter, offer, data, [*self._headers, (CASCADE_HEADER.encode(), header.encode())]

    async def run(self, mark: CascadeMark, *, streaming: bool) -> Response:
        meter, offer, data, headers = self._start(mark)
        return await deliberate(
            self._request,
            data,
            offer,
            self._plan,
            self._pool,
            meter,
            self._rid,
            streaming=streaming,
            include_usage=self._checked.wants_usage,
            headers=headers,
        )


class CascadeStream(Response):
    """A cascade streamed: SSE comments every `keepalive_s` while the fast stage decides (the stream opens
    with the first one; before, an engine's refusal keeps its status), then the fast answer replayed, or the
    deliberate tier's stream relayed as it runs. A client that leaves while the fast stage runs cancels it;
    the request ends once, either way."""

    def __init__(
        self,
        stage: _FastStage,
        escalation: _Escalation,
        meter: Meter,
        checked: ChatRequest,
        threshold: float,
        keepalive: float,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = [*SSE_HEADERS, *escalation.headers]
        self._stage, self._escalation, self._meter = stage, escalation, meter
        self._checked, self._threshold, self._keepalive = checked, threshold, keepalive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        meter, checked = self._meter, self._checked
        watch = DisconnectWatch(receive)
        meter.sent()
        work = asyncio.get_running_loop().create_task(self._stage.call())
        opened = False
        try:
            while True:
                try:
                    async with asyncio.timeout(self._keepalive):
                        reply = await asyncio.shield(work)
                    break
                except TimeoutError:
                    if not opened:
                        opened = True
                        await send(
                            {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                        )
                    await _body(send, _KEEPALIVE)
        except asyncio.CancelledError as exc:
            await _stop(work)
            disconnected = watch.absorb()
            outcome = Outcome.of_failure(exc, disconnected=disconnected)
            status = ended_status(disconnected=disconnected, opened=opened)
            await asyncio.shield(meter.done(meter.exchange(outcome, status)))
            if not disconnected:
                raise
            return
        except Exception as exc:
            watch.stop()
            error = (
                from_engine_error(exc)
                if isinstance(exc, EngineError)
                else GatewayError(500, "The cascade failed inside the gateway.", code="internal_error")
            )
            replica = exc.replica if isinstance(exc, EngineError) else ""
            outcome = Outcome.of_failure(exc, disconnected=False)
            await asyncio.shield(
                meter.done(meter.exchange(outcome, 200 if opened else error.status, replica))
            )
            if not opened:
                response = error.response()
                response.raw_headers.extend(self._escalation.headers)
                await response(scope, receive, send)
            else:
                await _body(send, error_event(error), more=False)
            return
        watch.stop()
        decision = self._stage.decide(reply, checked, self._threshold)
        if decision.mark.record.escalated:
            deliberation = await self._escalation.run(decision.mark, streaming=True)
            assert isinstance(deliberation, DeliberationStream)
            await deliberation(scope, receive, _after_start(send) if opened else send)
            return
        await self._replay(decision, reply, send, opened)

    async def _replay(self, decision: _Decision, reply: EngineReply, send: Send, opened: bool) -> None:
        meter, checked = self._meter, self._checked
        meter.cascade = decision.mark
        model, request_id = self._escalation.public_id, self._escalation.request_id
        chunks = Chunks(request_id, model)
        choice = decision.choice(checked)
        message = choice.get("message") or {}
        answer = decision.answer(f"chatcmpl-{request_id}", model, checked)
        exchange = meter.exchange(Outcome.OK, 200, reply.replica, self._stage.usage(reply), reply=answer)
        parts = [chunks.delta({"role": "assistant", "content": ""})]
        if message.get("reasoning"):  # a fast engine that reasons (a parser on the fast pool)
            parts.append(chunks.delta({"reasoning": message["reasoning"]}))
        if message.get("content"):
            parts.append(chunks.delta({"content": message["content"]}))
        parts.append(chunks.delta({}, choice.get("finish_reason") or "stop", choice.get("logprobs")))
        if checked.wants_usage:
            usage = {**(reply.payload.get("usage") or {}), **meter.cost_fields(exchange)}
            parts.append(chunks.usage(usage))
        parts.append(DONE)
        await asyncio.shield(meter.done(exchange))  # durable before the stream ends
        if not opened:
            headers = [*self.raw_headers, decision.header()]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        await _body(send, b"".join(parts), more=False)


def _after_start(send: Send) -> Send:
    """`send` for a response whose start went out already (with the keep-alives): its start is dropped."""

    async def forward(message: Message) -> None:
        if message["type"] != "http.response.start":
            await send(message)

    return forward


async def _body(send: Send, body: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def _stop(work: asyncio.Task[EngineReply]) -> None:
    if not work.done():
        work.cancel()
    with contextlib.suppress(BaseException):
        await work
