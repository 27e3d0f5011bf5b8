"""A real OTLP/HTTP traces receiver for tests: POST /v1/traces, protobuf `ExportTraceServiceRequest` bodies,
decoded into plain spans (no Collector binary needed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

SERVER, CLIENT = 2, 3  # Span.SpanKind
STATUS_ERROR = 2  # Status.StatusCode


@dataclass(frozen=True)
class ExportedSpan:
    trace_id: str  # hex, as in a `traceparent`
    span_id: str
    parent_id: str  # "" for a root span
    name: str
    kind: int
    attributes: dict[str, Any]
    status: int
    service: str  # its resource's service.name

    def sent(self, traceparents: list[str | None]) -> bool:
        """Whether a call made in this span's context sent one of `traceparents` (sampled)."""
        for traceparent in traceparents:
            version, trace_id, span_id, flags = (traceparent or "---").split("-")
            if (trace_id, span_id) == (self.trace_id, self.span_id):
                return version == "00" and int(flags, 16) & 1 == 1
        return False


class Receiver:
    """Spans exported to `url` (POST /v1/traces); `posts` counts every request that came, to any path."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.posts = 0
        self._changed = threading.Condition()
        self.url = ""

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource in request.resource_spans:
            service = _attributes(resource.resource.attributes).get("service.name", "")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    spans.append(
                        ExportedSpan(
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.name,
                            span.kind,
                            _attributes(span.attributes),
                            span.status.code,
                            service,
                        )
                    )
        with self._changed:
            self.spans.extend(spans)
            self._changed.notify_all()

    def counted(self) -> None:
        with self._changed:
            self.posts += 1

    def wait_for(self, count: int, timeout_s: float = 60.0) -> list[ExportedSpan]:
        """At least `count` spans, waited for under a generous deadline."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self.spans) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.spans)} spans exported, not {count}, within {timeout_s} s"
                self._changed.wait(left)
            return list(self.spans)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver.counted()
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            receiver.receive(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
