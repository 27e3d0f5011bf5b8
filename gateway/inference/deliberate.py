"""A deliberate chat request from admission to answer: the deliberation run, its response (a body, or a
stream of reasoning as it comes with keep-alives while samples run), and its one usage record, depth
included - also when the client leaves, the engine fails or the gateway shuts down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from engines import EngineError, EnginePool
from gateway.accounting.exchange import Outcome
from gateway.deliberation import (
    Chunks,
    Deliberator,
    DepthPlan,
    DepthUnreachable,
    Run,
    completion_body,
    logprobs,
    plan_for,
    progress_fields,
    usage_body,
)
from gateway.http.disconnect import DisconnectWatch, ended_status
from gateway.http.errors import GatewayError, error_event, from_engine_error
from gateway.http.relay import DONE, SSE_HEADERS
from gateway.http.schemas import ChatRequest
from gateway.inference.admission import DEFAULT_OUTPUT_TOKENS, TokenEstimate
from gateway.inference.catalog import Offer
from gateway.inference.meter import Meter
from gateway.refusals import Refusal
from gateway.settings import DeliberationSettings

__all__ = ["DEPTH_HEADER", "deliberate", "deliberation_estimate", "deliberation_plan", "depth_refusal"]

DEPTH_HEADER = "x-tiergate-depth"  # "best-effort": a bound below the floor is served, the floor may be missed

log = logging.getLogger("tiergate.deliberation")

_KEEPALIVE = b": deliberating\n\n"


def deliberation_plan(
    settings: DeliberationSettings,
    checked: ChatRequest,
    prompt: int,
    offer: Offer,
    headers: Headers,
) -> DepthPlan:
    """The request's plan (before anything is reserved); DepthUnreachable when its bound cannot hold it, a
    400 `unsupported_parameter` for what the tier cannot honour (never dropped in silence)."""
    _refuse_the_unhonourable(checked, settings)
    best_effort = headers.get(DEPTH_HEADER, "").strip().lower() == "best-effort"
    max_model_len = offer.max_model_len
    context = max(1, max_model_len - prompt) if max_model_len is not None else None
    return plan_for(
        settings,
        checked.reasoning_effort,
        checked.output_limit,
        context,
        most=offer.max_output_tokens,
        unbounded=DEFAULT_OUTPUT_TOKENS,
        best_effort=best_effort,
        choices=checked.n or 1,
    )


# vLLM extras the deliberation sets itself on every call (continuations, the cap): a client's would break it
_OWN_FIELDS = ("continue_final_message", "add_generation_prompt", "echo", "thinking_token_budget")


def _refuse_the_unhonourable(checked: ChatRequest, settings: DeliberationSettings) -> None:
    extra = checked.model_extra or {}
    for field in _OWN_FIELDS:
        if field in extra:
            raise _unsupported(
                field, "the deliberate tier sets it on each engine call itself (continuations, cap)"
            )
    options = checked.stream_options
    if options is not None and (options.model_extra or {}).get("continuous_usage_stats"):
        raise _unsupported(
            "stream_options.continuous_usage_stats",
            "a deliberation's usage (every sample, extension and close) is counted once, in its last chunk",
        )
    kwargs = extra.get("chat_template_kwargs")
    if isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False:
        raise _unsupported(
            "chat_template_kwargs", "the deliberate tier's answers are reasoned: thinking stays on"
        )
    if settings.reasoning == "prompted":  # the model's reasoning is its text: no constraint may shape it
        response_format = extra.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") in (
            "json_object",
            "json_schema",
        ):
            raise _unsupported(
                checked.param("response_format"),
                "this model reasons in its own text, which a JSON constraint would forbid",
            )
        choice = extra.get("tool_choice")
        if choice == "required" or isinstance(choice, dict):
            raise _unsupported(
                checked.param("tool_choice"),
                "this model reasons in its own text, which a forced tool call would forbid",
            )


def _unsupported(param: str, why: str) -> Refusal:
    return Refusal(
        "invalid",
        f"Unsupported parameter on the deliberate tier: '{param}': {why}. The fast tier takes it.",
        code="unsupported_parameter",
        param=param,
    )


def depth_refusal(exc: DepthUnreachable, checked: ChatRequest) -> Refusal:
    """The 400 for a bound that cannot hold the depth promised."""
    field = checked.output_param
    return Refusal(
        "invalid",
        f"{field} is {exc.requested}, but the {exc.effort} effort promises at least {exc.floor} reasoning"
        f" tokens and room for an answer: at least {exc.minimum}. Raise {field}, lower"
        f" {checked.param('reasoning_effort')},"
        f" or send `{DEPTH_HEADER}: best-effort` to accept a shallower answer billed at the fast tier's"
        " prices.",
        code="max_tokens_below_depth_floor",
        param=field,
    )


def deliberation_estimate(prompt: int, plan: DepthPlan) -> TokenEstimate:
    """The most a deliberation may use, for its reservations: every sample generates at most the plan's
    output over all its calls; the engines read the prompt once a sample for the first call, then again,
    with the reasoning so far, for each extension and close the plan allows (`DepthPlan.prompt_bound`)."""
    return TokenEstimate(prompt=plan.prompt_bound(prompt), output=plan.output_bound(), n=1)


async def deliberate(
    request: Request,
    data: dict[str, Any],
    offer: Offer,
    plan: DepthPlan,
    pool: EnginePool,
    meter: Meter,
    request_id: str,
    *,
    streaming: bool,
    include_usage: bool,
    headers: list[tuple[bytes, bytes]],
) -> Response:
    settings = offer.deliberation
    assert settings is not None
    run = _new_run(data, plan, settings)
    if streaming:
        return DeliberationStream(run, pool, offer, meter, request_id, include_usage, headers)
    deliberator = Deliberator(pool, offer.engine_model, request_id, trace=meter.trace)
    watch = DisconnectWatch(request.receive)
    meter.sent()
    try:
        await deliberator.run(run)
    except BaseException as exc:
        meter.depth = run.depth()  # what it reached before it was cut: billed so
        return await meter.fail(exc, watch, replica=run.replica, usage=run.usage(), estimated=run.estimated)
    watch.stop()
    answer = completion_body(run, request_id, offer.public_id)
    meter.depth = run.depth()
    exchange = meter.exchange(
        Outcome.OK, 200, run.replica, run.usage(), reply=answer, estimated=run.estimated
    )
    answer["usage"].update(meter.cost_fields(exchange))
    await meter.done(exchange)  # durable before the client has its answer
    response = Response(orjson.dumps(answer), media_type="application/json")
    response.raw_headers.extend(headers)
    return response


def _new_run(data: dict[str, Any], plan: DepthPlan, settings: DeliberationSettings) -> Run:
    body = {key: value for key, value in data.items() if key not in ("stream", "stream_options", "n")}
    if plan.output is not None and plan.pinned:  # the first call's bound is the sample's; then what is left
        body.pop("max_tokens", None)
        body["max_completion_tokens"] = plan.output
    return Run(plan=plan, settings=settings, body=body)


async def _done(meter: Meter, run: Run, outcome: Outcome, status: int, first: float | None = None) -> None:
    meter.depth = run.depth()
    exchange = meter.exchange(
        outcome, status, run.replica, run.usage(), first_event_at=first, estimated=run.estimated
    )
    await meter.done(exchange)


class DeliberationStream(Response):
    """A deliberation streamed as it runs: the first sample's reasoning as it is generated, its answer as soon
    as nothing can discard it (one sample), progress chunks while several samples run (`tiergate.progress`),
    SSE comments every `keepalive_s` of silence; then the rest of the answer (with several samples, the
    vote's: `tiergate.winner` names it, with its reasoning when another sample than the one streamed won),
    the usage chunk when asked for, and [DONE]. A client that leaves cancels every engine call at once; the
    record is written exactly once."""

    def __init__(
        self,
        run: Run,
        pool: EnginePool,
        offer: Offer,
        meter: Meter,
        request_id: str,
        include_usage: bool,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = [*SSE_HEADERS, *headers]
        self._extra = headers  # for an error answered before the stream opens
        self._run = run
        self._pool = pool
        self._offer = offer
        self._meter = meter
        self._request_id = request_id
        self._include_usage = include_usage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run, meter = self._run, self._meter
        chunks = Chunks(self._request_id, self._offer.public_id)
        feed = _Feed(chunks)
        deliberator = Deliberator(self._pool, self._offer.engine_model, self._request_id, feed, meter.trace)
        watch = DisconnectWatch(receive)
        meter.sent()
        work = asyncio.get_running_loop().create_task(deliberator.run(run))
        work.add_done_callback(lambda _: feed.queue.put_nowait(None))
        metered = False
        opened = False  # the stream's headers went out: from then on an error can only be an SSE event

        async def open_stream() -> None:
            # not before the engine has answered something (or a keep-alive is due): a request the engine
            # refuses at once gets its real status (400 context_length_exceeded...), not a 200 stream
            nonlocal opened
            if not opened:
                opened = True
                await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
                await self._send(send, chunks.delta({"role": "assistant", "content": ""}))

        try:
            keepalive = run.settings.keepalive_s
            while True:
                try:
                    # asyncio.timeout, not wait_for: on 3.11, wait_for loses a cancellation (the client's
                    # disconnect) that lands as the queue hands it an event - likely with events every ms
                    async with asyncio.timeout(keepalive):
                        event = await feed.queue.get()
                except TimeoutError:
                    await open_stream()
                    await self._send(send, _KEEPALIVE)  # nothing to say yet: the connection stays up
                    continue
                if event is None:
                    break
                await open_stream()
                await self._send(send, event)
            tail: list[bytes] = []
            try:
                work.result()
            except Exception as exc:
                watch.stop()
                metered = True
                error = _stream_error(exc)
                outcome = Outcome.of_failure(exc, disconnected=False)
                status = 200 if opened else error.status
                await asyncio.shield(_done(meter, run, outcome, status, feed.first))
                if not opened:  # nothing sent yet: an ordinary error response, with its status
                    response = error.response()
                    response.raw_headers.extend(self._extra)
                    await response(scope, receive, send)
                    return
                tail.append(error_event(error))
                await self._send(send, b"".join(tail), more=False)
                return
            watch.stop()  # from here on a disconnect changes nothing
            await open_stream()
            answer = run.answer
            if run.chosen != 0:  # the vote chose another sample than the one streamed
                tail.append(chunks.winner(run.chosen, answer.reasoning))
            for index, delivered in enumerate(run.answers):
                content = delivered.content
                if index == 0 and run.chosen == 0 and content.startswith(run.live_content):
                    content = content[len(run.live_content) :]  # the rest of what was streamed as it came
                if index > 0 and delivered.reasoning:  # another choice: its reasoning was not streamed
                    tail.append(chunks.delta({"reasoning": delivered.reasoning}, index=index))
                if content:
                    tail.append(chunks.delta({"content": content}, index=index))
                if delivered.tool_calls:
                    calls = [{"index": i, **call} for i, call in enumerate(delivered.tool_calls)]
                    tail.append(chunks.delta({"tool_calls": calls}, index=index))
                # the answer's logprobs in one piece, with the chunk that ends it
                finish = delivered.finish_reason or "stop"
                tail.append(chunks.delta({}, finish, logprobs(run, delivered), index=index))
            meter.depth = run.depth()
            exchange = meter.exchange(
                Outcome.OK,
                200,
                run.replica,
                run.usage(),
                first_event_at=feed.first or time.monotonic(),
                estimated=run.estimated,
                delivered_tokens=answer.generated,
            )
            if self._include_usage:
                usage = usage_body(run)
                usage.update(meter.cost_fields(exchange))
                tail.append(chunks.usage(usage))
            tail.append(DONE)
            metered = True
            await asyncio.shield(meter.done(exchange))  # durable before the stream ends
            await self._send(send, b"".join(tail), more=False)
        except asyncio.CancelledError as exc:
            await _stop(work)  # every engine call it made is closed, stopping the engines' work
            disconnected = watch.absorb()
            if not metered:
                outcome = Outcome.of_failure(exc, disconnected=disconnected)
                status = ended_status(disconnected=disconnected, opened=opened)
                await asyncio.shield(_done(meter, run, outcome, status, feed.first))
            if not disconnected:
                raise
        finally:
            watch.stop()
            await _stop(work)

    @staticmethod
    async def _send(send: Send, body: bytes, *, more: bool = True) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": more})


class _Feed:
    """The runner's listener: each event as the stream's chunk, queued for the response (None: the run
    ended); `first` is when the first token went out, for the time-to-first-token metric."""

    __slots__ = ("_chunks", "first", "queue")

    def __init__(self, chunks: Chunks) -> None:
        self._chunks = chunks
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.first: float | None = None

    def reasoning(self, text: str) -> None:
        self.first = self.first or time.monotonic()
        self.queue.put_nowait(self._chunks.delta({"reasoning": text}))

    def content(self, text: str) -> None:
        self.first = self.first or time.monotonic()
        self.queue.put_nowait(self._chunks.delta({"content": text}))

    def progress(self, run: Run) -> None:
        self.queue.put_nowait(self._chunks.progress(progress_fields(run)))


def _stream_error(exc: Exception) -> GatewayError:
    if isinstance(exc, EngineError):
        return from_engine_error(exc)
    log.error("a deliberation failed", exc_info=exc)  # a fault of ours: logged, the client gets an envelope
    return GatewayError(500, "The deliberation failed inside the gateway.", code="internal_error")


async def _stop(work: asyncio.Task[None]) -> None:
    if not work.done():
        work.cancel()
    with contextlib.suppress(BaseException):
        await work
