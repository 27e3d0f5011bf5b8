"""A cascade chat request: its fast stage (k samples in one `n=k` call, with logprobs), scored
(`deliberation/confidence.py`); delivered at or above the model's threshold, else the deliberate tier answers
the same request. One usage record for both stages (`Meter.cascade`), one ending, as for any request; a
stream sends keep-alives while the fast stage decides, then the chosen answer only."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from engines import EnginePool
from engines.affinity import affinity_key
from gateway.accounting.exchange import Outcome
from gateway.deliberation import DepthPlan
from gateway.http.disconnect import DisconnectWatch
from gateway.http.endpoints import Endpoint
from gateway.http.schemas import ChatRequest
from gateway.inference.admission import TokenEstimate, pinned_output
from gateway.inference.cascade_stages import CASCADE_HEADER, Escalation, FastStage, MeterFor
from gateway.inference.cascade_stream import CascadeStream
from gateway.inference.catalog import Offer
from gateway.refusals import Refusal

__all__ = ["CASCADE_HEADER", "cascade", "cascade_estimate", "refuse_for_cascade"]


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
    # greedy (temperature 0): one sample; vLLM refuses n > 1 with greedy sampling (they would agree anyway)
    samples = 1 if body.get("temperature") == 0 else settings.samples
    body.update(n=samples, logprobs=True)  # the client's top_logprobs, if any, stay as asked
    pinned = pinned_output(checked, offer)
    if pinned is not None:  # what was reserved is what the engine is told (the deliberation pins its own)
        body[pinned[0]] = pinned[1]
    payload = orjson.dumps(body)
    affinity = affinity_key(body, chat=True)
    meter = meter_for(pools[0])
    stage = FastStage(
        endpoint.path,
        payload,
        affinity,
        request_id,
        pools[0],
        samples,
        model=offer.engine_model,
        trace=meter.trace,
    )
    escalation = Escalation(request, checked, data, offer, plan, pools[1], meter_for, request_id, headers)
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
