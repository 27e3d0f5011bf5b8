"""A cascade's two stages: the fast one (its `n=k` call, its usage, its decision) and the escalation (the
deliberate tier answering the same request under the cascade's name and record)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from engines import EnginePool, EngineReply, Usage
from gateway.deliberation import DepthPlan
from gateway.deliberation.confidence import Confidence, score_samples
from gateway.http.schemas import ChatRequest
from gateway.inference.catalog import Offer
from gateway.inference.deliberate import deliberate
from gateway.inference.meter import CascadeMark, Meter
from gateway.tiers import Tier
from pricing import Cascade

if TYPE_CHECKING:
    from gateway.accounting.tracing import RequestTrace

__all__ = ["CASCADE_HEADER", "Decision", "Escalation", "FastStage", "MeterFor"]

CASCADE_HEADER = "x-tiergate-cascade"

MeterFor = Callable[[EnginePool], Meter]


class Decision:
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


class FastStage:
    __slots__ = ("_affinity", "_model", "_path", "_payload", "_pool", "_request_id", "_trace", "samples")

    def __init__(
        self,
        path: str,
        payload: bytes,
        affinity: str | None,
        request_id: str,
        pool: EnginePool,
        samples: int,
        *,
        model: str,
        trace: RequestTrace | None,
    ) -> None:
        self._path, self._payload, self._affinity = path, payload, affinity
        self._request_id, self._pool, self.samples = request_id, pool, samples
        self._model, self._trace = model, trace  # the engine's name for the model; the request's span

    async def call(self) -> EngineReply:
        trace = self._trace
        if trace is None:
            return await self._pool.complete(
                self._path, self._payload, request_id=self._request_id, affinity=self._affinity
            )
        with trace.call(self._pool.name, self._model, kind="cascade_fast", choices=self.samples) as call:
            reply = await self._pool.complete(
                self._path,
                self._payload,
                request_id=self._request_id,
                affinity=self._affinity,
                headers=call.headers,
            )
            call.answered(reply.replica, self.usage(reply))
            return reply

    def usage(self, reply: EngineReply) -> Usage | None:
        """The call's usage, its prompt billed once a sample: vLLM prefills each of the n sequences (as the
        deliberate tier's self-consistency is billed, docs/deliberation.md)."""
        usage = reply.usage
        if usage is None:
            return None
        k = self.samples
        return replace(usage, prompt_tokens=usage.prompt_tokens * k, cached_tokens=usage.cached_tokens * k)

    def decide(self, reply: EngineReply, checked: ChatRequest, threshold: float) -> Decision:
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
        return Decision(reply, confidence, CascadeMark(record, self.samples, confidence.signals()))


class Escalation:
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
