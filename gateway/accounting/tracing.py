"""OpenTelemetry traces of inference requests (docs/tracing.md): a server span per request, a client span per
engine call under it, with the GenAI semantic conventions, and the W3C trace context sent to the engines.

    Tracing        the tracer provider (OTLP/HTTP exporter, batched), owned by GatewayState; None when off
    RequestTrace   one request's span: named once the model is known, ended once, by the meter
    EngineCall     one engine call's span, and the `traceparent` (and `tracestate`) headers it sends

Only GatewayState imports this module, and only when `tracing.enabled`: with tracing off neither the SDK's
tracing nor its exporter is imported, and the hot path holds `None` where a trace would be (one check a
request).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from engines import Usage
from gateway.accounting.exchange import Exchange, Outcome
from gateway.settings import TracingSettings
from pricing import Charge, UsageRecord

__all__ = ["EngineCall", "RequestTrace", "Tracing"]

_PROVIDER = "tiergate"  # gen_ai.provider.name of the request span: the gateway is what the client called


class Tracing:
    """The gateway's tracer: its own provider (never the process-wide global one), shut down, and so
    flushed, when the gateway closes."""

    def __init__(self, provider: TracerProvider, engines: Mapping[str, str], replicas: Iterable[str]) -> None:
        """`engines`: each pool's engine family (vllm, trtllm, openai), the engine spans' provider name;
        `replicas`: every replica's URL, whose attributes are worked out once, not once a call."""
        self._provider = provider
        self._tracer = provider.get_tracer("tiergate")
        self._engines = engines
        self._replicas = {url: _replica_attributes(url) for url in replicas}
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def create(
        cls, settings: TracingSettings, engines: Mapping[str, str], replicas: Iterable[str], version: str
    ) -> Tracing:
        # every argument given: the settings decide these (the SDK still reads OTEL_EXPORTER_OTLP_* for TLS
        # files, and merges OTEL_EXPORTER_OTLP_HEADERS under `tracing.headers`)
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint,
            headers={name: value.get_secret_value() for name, value in settings.headers.items()},
            timeout=settings.timeout_s,
            compression=Compression.NoCompression,
        )
        provider = TracerProvider(
            # a client's sampled flag decides for its own traces; the ratio for those that start here
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
            resource=Resource({"service.name": settings.service_name, "service.version": version}),
            shutdown_on_exit=False,  # the lifespan shuts it down (GatewayState.aclose)
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))  # exports off the event loop, in batches
        return cls(provider, engines, replicas)

    def request(self, headers: Mapping[str, str], operation: str, arrived: float) -> RequestTrace:
        """A request's span, a child of the client's `traceparent` when it sent one; it starts when the
        request arrived (`arrived`: monotonic), before its key was checked and its body read."""
        parent = self._propagator.extract(headers)
        started = time.time_ns() - int((time.monotonic() - arrived) * 1e9)
        span = self._tracer.start_span(
            operation,
            parent,
            SpanKind.SERVER,
            {"gen_ai.operation.name": operation, "gen_ai.provider.name": _PROVIDER},
            start_time=started,
        )
        return RequestTrace(self, span, operation)

    def call(
        self, parent: Span, pool: str, model: str, operation: str, kind: str, choices: int
    ) -> EngineCall:
        span = self._tracer.start_span(
            f"{operation} {model}",
            trace.set_span_in_context(parent),
            SpanKind.CLIENT,
            {
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": self._engines.get(pool, "openai"),
                "gen_ai.request.model": model,
                "gen_ai.request.choice.count": choices,
                "tiergate.pool": pool,
                "tiergate.engine_call": kind,
            },
        )
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, trace.set_span_in_context(span))
        headers = tuple((name.encode(), value.encode()) for name, value in carrier.items())
        return EngineCall(span, headers, self._replicas)

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        return self._provider.force_flush(int(timeout_s * 1000))

    async def aclose(self) -> None:
        """Export what is left and stop (blocking work: in a thread, off the event loop)."""
        await asyncio.to_thread(self._provider.shutdown)


class RequestTrace:
    """One inference request's server span. Ended once: by its meter with what it did and cost, or when it
    was refused before its engine work began."""

    __slots__ = ("_ended", "_operation", "_tracing", "code", "span")

    def __init__(self, tracing: Tracing, span: Span, operation: str) -> None:
        self._tracing = tracing
        self.span = span
        self._operation = operation
        self._ended = False
        self.code: str | None = None  # the error code the client was told, when the request failed

    def resolved(self, requested: str, public: str, tier: str, pool: str, request_id: str) -> None:
        """The model asked for (`requested`, as sent: `qwen3-8b:deliberate`), the one answering, and how."""
        span = self.span
        span.update_name(f"{self._operation} {requested}")
        span.set_attributes(
            {
                "gen_ai.request.model": requested,
                "gen_ai.response.model": public,
                "tiergate.tier": tier,
                "tiergate.pool": pool,
                "tiergate.request_id": request_id,
            }
        )

    def call(self, pool: str, model: str, *, kind: str, choices: int = 1) -> EngineCall:
        """A child span for one engine call to `pool` (`model`: the engine's name for it). `kind` says what
        the call is for: `relay` (the fast tier), `wave` and `sample` (deliberation draws), `extension` and
        `close` (budget forcing); a cascade names its stages. Send its `headers` with the call; end it with
        `answered` or `failed`, or use it as a context manager (an exception ends it failed)."""
        return self._tracing.call(self.span, pool, model, self._operation, kind, choices)

    def depth(self, fields: Mapping[str, object]) -> None:
        """What a deliberation delivered (`usage.reasoning_depth`), as `tiergate.depth.*`."""
        for name, value in fields.items():
            if isinstance(value, str | bool | int | float):  # None: not measured (no vote, no cap)
                self.span.set_attribute(f"tiergate.depth.{name}", value)

    def end(self, exchange: Exchange, record: UsageRecord, charge: Charge | None) -> None:
        """The request's end, from its exchange and usage record (as billed)."""
        if self._ended:
            return
        self._ended = True
        span = self.span
        attributes: dict[str, Any] = {
            "gen_ai.usage.input_tokens": record.prompt_tokens,
            "gen_ai.usage.output_tokens": record.completion_tokens,
            "gen_ai.usage.reasoning.output_tokens": record.reasoning_tokens,
            "gen_ai.usage.cache_read.input_tokens": record.cached_tokens,
            "gen_ai.response.id": exchange.request_id,
            "http.response.status_code": exchange.status,
            "tiergate.endpoint": exchange.endpoint,
            "tiergate.outcome": exchange.outcome.value,
            "tiergate.estimated": record.estimated,
        }
        if exchange.replica:
            attributes["tiergate.replica"] = exchange.replica
        if charge is not None:
            attributes["tiergate.cost_micros"] = charge.total
        span.set_attributes(attributes)
        if exchange.outcome is not Outcome.OK:
            self._error(self.code or exchange.outcome.value)
        span.end()

    def refused(self, status: int, code: str) -> None:
        """Ends the span of a request refused (or failed) before its meter ended it; else does nothing."""
        if self._ended:
            return
        self._ended = True
        self.span.set_attribute("http.response.status_code", status)
        self._error(code)
        self.span.end()

    def _error(self, code: str) -> None:
        self.span.set_attribute("error.type", code)
        self.span.set_status(Status(StatusCode.ERROR, code))


class EngineCall:
    """One engine call's client span. `headers`: the W3C trace context to send with the call."""

    __slots__ = ("_ended", "_replicas", "headers", "span")

    def __init__(
        self,
        span: Span,
        headers: tuple[tuple[bytes, bytes], ...],
        replicas: Mapping[str, Mapping[str, AttributeValue]],
    ) -> None:
        self.span = span
        self.headers = headers
        self._replicas = replicas
        self._ended = False

    def answered(self, replica: str, usage: Usage | None, *, reasoning: int | None = None) -> None:
        """The call's end: the replica that answered and the call's tokens (`reasoning`: the gateway's own
        count when the engine's usage lacks it)."""
        if self._ended:
            return
        self._ended = True
        span = self.span
        self._replica(replica)
        if usage is not None:
            span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                    "gen_ai.usage.cache_read.input_tokens": usage.cached_tokens,
                }
            )
            reasoning = reasoning if reasoning is not None else usage.reasoning_tokens
        if reasoning is not None:
            span.set_attribute("gen_ai.usage.reasoning.output_tokens", reasoning)
        span.end()

    def failed(self, error: BaseException | str, replica: str = "") -> None:
        """The call's end, failed: `error` an exception (its type names it) or an outcome."""
        if self._ended:
            return
        self._ended = True
        span = self.span
        self._replica(replica or str(getattr(error, "replica", "") or ""))
        code = error if isinstance(error, str) else type(error).__name__
        span.set_attribute("error.type", code)
        span.set_status(Status(StatusCode.ERROR, code))
        span.end()

    def __enter__(self) -> EngineCall:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is not None:
            self.failed(error)
        elif not self._ended:
            self.answered("", None)

    def _replica(self, url: str) -> None:
        if url:
            self.span.set_attributes(self._replicas.get(url) or _replica_attributes(url))


def _replica_attributes(url: str) -> dict[str, AttributeValue]:
    parts = urlsplit(url)
    attributes: dict[str, AttributeValue] = {"tiergate.replica": url}
    if parts.hostname:
        attributes["server.address"] = parts.hostname
    if parts.port:
        attributes["server.port"] = parts.port
    return attributes
