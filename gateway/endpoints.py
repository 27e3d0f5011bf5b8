"""The two inference endpoints and the request shape each one takes."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.schemas import ChatRequest, CompletionRequest, InferenceRequest

__all__ = ["CHAT", "COMPLETIONS", "Endpoint"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    path: str
    shape: type[InferenceRequest]


CHAT = Endpoint("chat", "/v1/chat/completions", ChatRequest)
COMPLETIONS = Endpoint("completions", "/v1/completions", CompletionRequest)
