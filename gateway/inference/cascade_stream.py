"""A cascade streamed: keep-alives while the fast stage decides, then the chosen answer only."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from engines import EngineError, EngineReply
from gateway.accounting.exchange import Outcome
from gateway.deliberation import Chunks
from gateway.http.disconnect import DisconnectWatch, ended_status
from gateway.http.errors import GatewayError, error_event, from_engine_error
from gateway.http.relay import DONE, SSE_HEADERS
from gateway.http.schemas import ChatRequest
from gateway.inference.cascade_stages import Decision, Escalation, FastStage
from gateway.inference.deliberate import DeliberationStream
from gateway.inference.meter import Meter

__all__ = ["CascadeStream"]

log = logging.getLogger("tiergate.cascade")

_KEEPALIVE = b": deciding\n\n"


class CascadeStream(Response):
    """A cascade streamed: SSE comments every `keepalive_s` while the fast stage decides (the stream opens
    with the first one; before, an engine's refusal keeps its status), then the fast answer replayed, or the
    deliberate tier's stream relayed as it runs. A client that leaves while the fast stage runs cancels it;
    the request ends once, either way."""

    def __init__(
        self,
        stage: FastStage,
        escalation: Escalation,
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
            if isinstance(exc, EngineError):
                error = from_engine_error(exc)
            else:  # a fault of ours: logged, the client gets an envelope
                log.error("a cascade's fast stage failed", exc_info=exc)
                error = GatewayError(500, "The cascade failed inside the gateway.", code="internal_error")
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

    async def _replay(self, decision: Decision, reply: EngineReply, send: Send, opened: bool) -> None:
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
