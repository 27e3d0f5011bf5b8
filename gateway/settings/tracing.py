"""OpenTelemetry traces: where they go, and how many (docs/tracing.md)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from gateway.settings.base import _Section

__all__ = ["TracingSettings"]


class TracingSettings(_Section):
    # off: no tracer provider, no spans, no `traceparent` to the engines, the OpenTelemetry SDK not imported
    enabled: bool = False
    endpoint: str = Field(
        "http://localhost:4318/v1/traces", description="an OTLP/HTTP (protobuf) traces URL, path included"
    )
    service_name: str = Field("tiergate", min_length=1)
    # of the traces this gateway starts; a client's `traceparent` decides for the traces it started itself
    sample_ratio: float = Field(1.0, ge=0, le=1)
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="sent with every export")
    timeout_s: float = Field(10.0, gt=0, le=300, description="the longest one export may take")
