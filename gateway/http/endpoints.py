"""The two inference endpoints, the request shape each one takes, and the id of each one's replies."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.http.schemas import ChatRequest, CompletionRequest, InferenceRequest

__all__ = ["CHAT", "COMPLETIONS", "Endpoint", "request_id_of_reply"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    path: str
    shape: type[InferenceRequest]
    reply_prefix: str  # a reply's `id` is this prefix and the gateway's request id, as vLLM makes it

    def reply_id(self, request_id: str) -> str:
        return self.reply_prefix + request_id


CHAT = Endpoint("chat", "/v1/chat/completions", ChatRequest, "chatcmpl-")
COMPLETIONS = Endpoint("completions", "/v1/completions", CompletionRequest, "cmpl-")


def request_id_of_reply(reply_id: str) -> str:
    """The request id in a reply's `id` (`chatcmpl-req_...` -> `req_...`); any other id as it is."""
    for endpoint in (CHAT, COMPLETIONS):
        if reply_id.startswith(endpoint.reply_prefix):
            return reply_id[len(endpoint.reply_prefix) :]
    return reply_id
