"""OpenTelemetry traces against a real OTLP/HTTP receiver (tests/otlp.py): a server span per request, a
client span per engine call under it, their GenAI attributes equal to the usage the client was billed, and
the `traceparent` each engine call carried equal to its span's context. Off: nothing exported, nothing sent.

Each gateway is stopped before its spans are read: its lifespan's close flushes what is left to export."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from engines.simulator import create_simulator_app, profile
from gateway import create_app
from tests.chat import user
from tests.conftest import gateway_settings, wait_ready
from tests.otlp import CLIENT, SERVER, STATUS_ERROR, ExportedSpan, Receiver, otlp_receiver
from tests.servers import serving

MESSAGES = user("Is 1001 a prime number?")
# medium: one sample extended to its floor (a wave, then extensions); high: three samples, each its own
# stream (the gateway caps their reasoning: the engine cannot), voted on
DELIBERATION = {
    "engine_caps_thinking": False,
    "efforts": {
        "medium": {"floor": 100, "samples": 1, "max_extensions": 8},
        "high": {"floor": 0, "cap": 400, "samples": 3},
    },
}


class EngineCalls:
    """The simulator's app, noting the `traceparent` (None: none) each inference call arrived with."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.traceparents: list[str | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("completions"):
            headers = dict(scope["headers"])
            value = headers.get(b"traceparent")
            self.traceparents.append(value.decode() if value is not None else None)
        await self._app(scope, receive, send)


@dataclass
class Served:
    sdk: openai.OpenAI
    engine: EngineCalls


@contextmanager
def traced_gateway(
    receiver: Receiver,
    *,
    enabled: bool = True,
    ratio: float = 1.0,
    engine_context: int = 32768,
    cascade: dict[str, Any] | None = None,
) -> Iterator[Served]:
    """A gateway over one recording simulator (both pools; `engine_context`: its max_model_len), tracing to
    `receiver`; stopped (and so flushed) when the block ends. `cascade`: qwen3-8b's cascade settings."""
    engine = EngineCalls(
        create_simulator_app(
            profile(
                "deliberate",
                zero_latency=True,
                reasoning_tokens_range=(30, 40),
                short_reasoning_rate=0.0,
                max_model_len=engine_context,
            )
        )
    )
    with serving(engine) as url:
        settings = gateway_settings(
            [url],
            [url],
            deliberation=DELIBERATION,
            model_settings={"qwen3-8b": {"cascade": cascade}} if cascade is not None else {},
            tracing={
                "enabled": enabled,
                "endpoint": receiver.url,
                "service_name": "tiergate-test",
                "sample_ratio": ratio,
            },
        )
        with serving(create_app(settings)) as gateway_url:
            wait_ready(gateway_url)
            sdk = openai.OpenAI(base_url=gateway_url + "/v1", api_key="unused", max_retries=0)
            try:
                yield Served(sdk, engine)
            finally:
                sdk.close()


def usage_fields(usage: Any) -> dict[str, Any]:
    assert usage is not None and usage.model_extra is not None
    fields: dict[str, Any] = usage.model_extra
    return fields


def children(spans: list[ExportedSpan], parent: ExportedSpan) -> list[ExportedSpan]:
    return [span for span in spans if span.parent_id == parent.span_id and span.trace_id == parent.trace_id]


def request_span(spans: list[ExportedSpan], request_id: str) -> ExportedSpan:
    found = [s for s in spans if s.kind == SERVER and s.attributes.get("tiergate.request_id") == request_id]
    assert len(found) == 1, f"{len(found)} request spans for {request_id}"
    return found[0]


def test_fast_requests_have_a_span_each_with_one_engine_call_under_it() -> None:
    client_trace, client_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with otlp_receiver() as receiver:
        with traced_gateway(receiver) as served:
            chat = served.sdk.chat.completions.with_raw_response.create(
                model="qwen3-8b:fast",
                messages=MESSAGES,
                extra_headers={"traceparent": f"00-{client_trace}-{client_span}-01"},
            )
            stream = served.sdk.chat.completions.with_raw_response.create(
                model="qwen3-8b:fast",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            streamed = [chunk for chunk in stream.parse() if chunk.usage is not None]
            completion = served.sdk.completions.with_raw_response.create(
                model="qwen3-8b:fast", prompt="Once upon a time", max_tokens=16
            )
            response = served.sdk.responses.with_raw_response.create(
                model="qwen3-8b:fast", input="Say hello.", store=False
            )
            sent = list(served.engine.traceparents)
        spans = receiver.wait_for(8)
    assert {span.service for span in spans} == {"tiergate-test"}
    assert len(sent) == 4 and all(sent)
    usages = [chat.parse().usage, streamed[0].usage, completion.parse().usage]
    request_ids = [reply.headers["x-request-id"] for reply in (chat, stream, completion)]
    for request_id, usage, operation in zip(
        request_ids, usages, ["chat", "chat", "text_completion"], strict=True
    ):
        span = request_span(spans, request_id)
        assert span.name == f"{operation} qwen3-8b:fast"
        attributes = span.attributes
        assert attributes["gen_ai.operation.name"] == operation
        assert attributes["gen_ai.request.model"] == "qwen3-8b:fast"
        assert attributes["gen_ai.response.model"] == "qwen3-8b:fast"
        assert attributes["tiergate.tier"] == "fast"
        assert attributes["http.response.status_code"] == 200
        assert usage is not None
        assert attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
        assert attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
        assert attributes["tiergate.cost_micros"] == usage_fields(usage)["cost_micros"]
        assert span.status != STATUS_ERROR
        (call,) = children(spans, span)
        assert call.kind == CLIENT
        assert call.name == f"{operation} qwen3-8b"  # the engine's name for the model
        assert call.attributes["tiergate.engine_call"] == "relay"
        assert call.attributes["tiergate.pool"] == "fast"
        assert call.attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
        assert call.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
        assert call.attributes["server.address"] == "127.0.0.1"
        assert call.sent(sent)  # the W3C context the engine got is the call's span
    # the Responses API is served as chat: its span says so, with the Responses usage's figures
    answer = response.parse()
    span = request_span(spans, response.headers["x-request-id"])
    assert (span.name, span.attributes["tiergate.endpoint"]) == ("chat qwen3-8b:fast", "responses")
    assert answer.usage is not None
    assert span.attributes["gen_ai.usage.input_tokens"] == answer.usage.input_tokens
    assert span.attributes["gen_ai.usage.output_tokens"] == answer.usage.output_tokens
    (call,) = children(spans, span)
    assert call.sent(sent)
    # the client's own trace is the first request's parent
    first = request_span(spans, chat.headers["x-request-id"])
    assert (first.trace_id, first.parent_id) == (client_trace, client_span)
    assert request_span(spans, stream.headers["x-request-id"]).parent_id == ""  # no traceparent: a root


def test_a_deliberation_has_a_span_per_engine_call_and_its_depth() -> None:
    with otlp_receiver() as receiver:
        with traced_gateway(receiver) as served:
            forced = served.sdk.chat.completions.with_raw_response.create(
                model="qwen3-8b:deliberate", messages=MESSAGES, reasoning_effort="medium"
            )
            voted = served.sdk.chat.completions.with_raw_response.create(
                model="qwen3-8b:deliberate", messages=MESSAGES, reasoning_effort="high"
            )
            before = len(served.engine.traceparents)
            streamed = served.sdk.chat.completions.with_raw_response.create(
                model="qwen3-8b:deliberate",
                messages=MESSAGES,
                reasoning_effort="medium",
                stream=True,
                stream_options={"include_usage": True},
            )
            (last,) = [chunk for chunk in streamed.parse() if chunk.usage is not None]
            sent = list(served.engine.traceparents)
        spans = receiver.wait_for(len(sent) + 3)
    # a streamed deliberation: the same spans, ended when its stream is
    assert last.usage is not None
    span = request_span(spans, streamed.headers["x-request-id"])
    assert span.attributes["gen_ai.usage.output_tokens"] == last.usage.completion_tokens
    assert (
        span.attributes["tiergate.depth.extensions"]
        == usage_fields(last.usage)["reasoning_depth"]["extensions"]
    )
    calls = children(spans, span)
    assert len(calls) == len(sent) - before and all(call.sent(sent) for call in calls)
    for reply in (forced, voted):
        usage = reply.parse().usage
        assert usage is not None and usage.completion_tokens_details is not None
        depth = usage_fields(usage)["reasoning_depth"]
        span = request_span(spans, reply.headers["x-request-id"])
        attributes = span.attributes
        assert span.name == "chat qwen3-8b:deliberate"
        assert attributes["tiergate.tier"] == "deliberate"
        assert attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
        assert attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
        assert (
            attributes["gen_ai.usage.reasoning.output_tokens"]
            == usage.completion_tokens_details.reasoning_tokens
        )
        assert attributes["tiergate.cost_micros"] == usage_fields(usage)["cost_micros"]
        for field in ("samples", "extensions", "floor", "floor_met", "reasoning_tokens", "effort"):
            assert attributes[f"tiergate.depth.{field}"] == depth[field], field
        calls = children(spans, span)
        assert all(call.kind == CLIENT and call.name == "chat qwen3-8b" for call in calls)
        assert all(call.attributes["tiergate.pool"] == "deliberate" for call in calls)
        # the engine calls together are the request: every token billed was an engine call's
        assert sum(call.attributes["gen_ai.usage.input_tokens"] for call in calls) == usage.prompt_tokens
        assert sum(call.attributes["gen_ai.usage.output_tokens"] for call in calls) == usage.completion_tokens
        assert all(call.sent(sent) for call in calls)
        kinds = [call.attributes["tiergate.engine_call"] for call in calls]
        if reply is forced:
            assert depth["extensions"] >= 2  # 30-40 reasoning tokens a call: extended to the floor of 100
            assert kinds.count("wave") == 1
            assert kinds.count("extension") == depth["extensions"]
            assert attributes["tiergate.depth.floor_met"] is True
        else:
            assert depth["samples"] == 3 and kinds.count("sample") == 3  # one call per sample
            assert all(
                call.attributes["gen_ai.request.choice.count"] == 1 for call in calls
            )  # each its own stream
            assert attributes["tiergate.depth.agreement"] == depth["agreement"]
    # every engine call the simulator saw was a span's
    assert before == sum(
        len(children(spans, request_span(spans, r.headers["x-request-id"]))) for r in (forced, voted)
    )


def test_a_cascade_has_its_fast_stage_and_its_escalation_under_one_request_span() -> None:
    with otlp_receiver() as receiver:
        # threshold 1: every fast answer is unsure, so the deliberate tier answers too
        with traced_gateway(receiver, cascade={"threshold": 1.0, "samples": 2}) as served:
            plain = served.sdk.chat.completions.with_raw_response.create(
                model="qwen3-8b:cascade", messages=MESSAGES, reasoning_effort="medium"
            )
            streamed = served.sdk.chat.completions.with_raw_response.create(
                model="qwen3-8b:cascade",
                messages=MESSAGES,
                reasoning_effort="medium",
                stream=True,
                stream_options={"include_usage": True},
            )
            (last,) = [chunk for chunk in streamed.parse() if chunk.usage is not None]
            sent = list(served.engine.traceparents)
        spans = receiver.wait_for(len(sent) + 2)
    ids = [plain.headers["x-request-id"], streamed.headers["x-request-id"]]
    for request_id, usage in zip(ids, [plain.parse().usage, last.usage], strict=True):
        assert usage is not None
        assert usage_fields(usage)["cascade"]["escalated"] is True
        span = request_span(spans, request_id)
        assert span.attributes["tiergate.tier"] == "cascade"
        assert span.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
        assert span.attributes["tiergate.cost_micros"] == usage_fields(usage)["cost_micros"]
        assert span.attributes["tiergate.depth.floor_met"] is True
        calls = children(spans, span)
        kinds = [call.attributes["tiergate.engine_call"] for call in calls]
        assert kinds.count("cascade_fast") == 1 and kinds.count("wave") == 1, kinds
        (fast,) = [call for call in calls if call.attributes["tiergate.engine_call"] == "cascade_fast"]
        assert (
            fast.attributes["gen_ai.request.choice.count"] == 2 and fast.attributes["tiergate.pool"] == "fast"
        )
        # both stages' engine calls together are the request billed
        assert sum(call.attributes["gen_ai.usage.input_tokens"] for call in calls) == usage.prompt_tokens
        assert sum(call.attributes["gen_ai.usage.output_tokens"] for call in calls) == usage.completion_tokens
        assert all(call.sent(sent) for call in calls)
    assert len(sent) == sum(len(children(spans, request_span(spans, request_id))) for request_id in ids)


def test_a_refused_request_has_an_error_span_and_no_engine_call() -> None:
    with otlp_receiver() as receiver:
        with traced_gateway(receiver) as served:
            with pytest.raises(openai.NotFoundError) as refused:
                served.sdk.chat.completions.create(model="no-such-model", messages=MESSAGES)
            assert served.engine.traceparents == []
        (span,) = receiver.wait_for(1)
    assert refused.value.response.headers["x-request-id"]
    assert span.kind == SERVER and span.status == STATUS_ERROR
    assert span.attributes["error.type"] == "model_not_found"
    assert span.attributes["http.response.status_code"] == 404


def test_a_request_the_engine_refuses_has_its_code_on_both_spans() -> None:
    with otlp_receiver() as receiver:
        with traced_gateway(receiver, engine_context=1024) as served:
            with pytest.raises(
                openai.BadRequestError
            ) as refused:  # within the gateway's bound, not the engine's
                served.sdk.chat.completions.create(model="qwen3-8b:fast", messages=MESSAGES, max_tokens=2048)
            sent = list(served.engine.traceparents)
        spans = receiver.wait_for(2)
    assert refused.value.code == "context_length_exceeded"
    span = request_span(spans, refused.value.response.headers["x-request-id"])
    assert span.status == STATUS_ERROR and span.name == "chat qwen3-8b:fast"
    assert span.attributes["error.type"] == "context_length_exceeded"
    assert span.attributes["http.response.status_code"] == 400
    assert span.attributes["tiergate.outcome"] == "rejected"
    (call,) = children(spans, span)
    assert call.status == STATUS_ERROR and call.attributes["error.type"] == "EngineRejected"
    assert call.sent(sent)


def test_tracing_off_exports_nothing_and_sends_no_traceparent() -> None:
    with otlp_receiver() as receiver:
        with traced_gateway(receiver, enabled=False) as served:
            served.sdk.chat.completions.create(model="qwen3-8b:fast", messages=MESSAGES)
            served.sdk.chat.completions.create(
                model="qwen3-8b:deliberate", messages=MESSAGES, reasoning_effort="medium"
            )
            sent = list(served.engine.traceparents)
        assert len(sent) >= 3 and not any(sent)  # the fast call, the wave and its extensions
        assert receiver.posts == 0


def test_unsampled_requests_export_nothing_but_send_their_context() -> None:
    """sample_ratio 0: no span recorded, yet each engine call carries a `traceparent`, marked unsampled; a
    client's sampled trace is recorded all the same (parent-based)."""
    client_trace, client_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with otlp_receiver() as receiver:
        with traced_gateway(receiver, ratio=0.0) as served:
            served.sdk.chat.completions.create(model="qwen3-8b:fast", messages=MESSAGES)
            unsampled = list(served.engine.traceparents)
            served.sdk.chat.completions.create(
                model="qwen3-8b:fast",
                messages=MESSAGES,
                extra_headers={"traceparent": f"00-{client_trace}-{client_span}-01"},
            )
        spans = receiver.wait_for(2)
    (traceparent,) = unsampled
    assert traceparent is not None and traceparent.startswith("00-")
    assert int(traceparent.rsplit("-", 1)[1], 16) & 1 == 0  # the sampled flag is off
    assert len(spans) == 2 and {span.trace_id for span in spans} == {client_trace}


def test_tracing_off_does_not_load_the_sdk() -> None:
    """A gateway built with tracing off has not imported the OpenTelemetry SDK's tracing nor its exporter,
    in a fresh interpreter (other parts may be there: FastAPI imports the API for its own no-op spans,
    redis-py the SDK's metrics)."""
    script = (
        "import asyncio, sys\n"
        "from gateway.settings import load_settings\n"
        "from gateway.state import GatewayState\n"
        "settings = load_settings(None, pools={'p': {'replicas': ['http://127.0.0.1:9']}},"
        " models={'m': {'tiers': {'fast': {'pool': 'p'}}}}, auth={'mode': 'disabled'})\n"
        "async def main():\n"
        "    state = await GatewayState.create(settings)\n"
        "    assert state.tracing is None\n"
        "    await state.aclose()\n"
        "asyncio.run(main())\n"
        "print(sorted(name for name in sys.modules if name.startswith(('opentelemetry.sdk.trace',"
        " 'opentelemetry.exporter', 'gateway.accounting.tracing'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
