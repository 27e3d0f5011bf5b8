"""The inference endpoints, the request shape each one takes, and the id of each one's replies."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.http.schemas import ChatRequest, CompletionRequest, InferenceRequest, ResponsesChatRequest

__all__ = ["CHAT", "COMPLETIONS", "RESPONSES", "RESPONSES_PATH", "Endpoint", "request_id_of_reply"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str  # as ledger rows, exports and metrics name it
    path: str  # the engine's path that serves it
    shape: type[InferenceRequest]
    reply_prefix: str  # a reply's `id` is this prefix and the gateway's request id, as vLLM makes it
    chat: bool  # the engine is sent a chat completion (messages), not a completion (prompt)

    def reply_id(self, request_id: str) -> str:
        return self.reply_prefix + request_id


CHAT = Endpoint("chat", "/v1/chat/completions", ChatRequest, "chatcmpl-", chat=True)
COMPLETIONS = Endpoint("completions", "/v1/completions", CompletionRequest, "cmpl-", chat=False)
# the Responses API, served by the engines' chat completions (gateway.responses translates both ways)
RESPONSES = Endpoint("responses", CHAT.path, ResponsesChatRequest, "resp_", chat=True)
RESPONSES_PATH = "/v1/responses"


def request_id_of_reply(reply_id: str) -> str:
    """The request id in a reply's `id` (`chatcmpl-req_...` -> `req_...`); any other id as it is."""
    for endpoint in (CHAT, COMPLETIONS, RESPONSES):
        if reply_id.startswith(endpoint.reply_prefix):
            return reply_id[len(endpoint.reply_prefix) :]
    return reply_id
