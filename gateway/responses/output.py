"""A chat completion as a Responses API `response` object: reasoning, message and function_call output
items, status, usage (with tiergate's cost and depth), and the request's own settings echoed back."""

from __future__ import annotations

import time
from typing import Any

from gateway.responses.request import ResponsesRequest

__all__ = ["Shell", "function_call_item", "message_item", "reasoning_item", "response_usage", "status_of"]

# the chat usage fields that have their own names in a Responses usage; the rest (cost, cost_micros,
# cost_details, reasoning_depth) is tiergate's and passes as it is
_CHAT_USAGE = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    }
)
_SUMMARY_CHARS = 1000


class Shell:
    """The parts of one response that do not come from the engine: its id, the request's settings."""

    __slots__ = ("created_at", "id", "request", "stored")

    def __init__(self, response_id: str, request: ResponsesRequest, *, stored: bool) -> None:
        self.id = response_id
        self.request = request
        self.stored = stored
        self.created_at = int(time.time())

    def body(
        self,
        model: str,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        *,
        incomplete: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        request = self.request
        text_format = request.text.format if request.text is not None and request.text.format else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete is not None else None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "metadata": request.metadata or {},
            "model": model,
            "output": output,
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "reasoning": {
                "effort": request.reasoning.effort if request.reasoning else None,
                "summary": request.summary,
            },
            "store": self.stored,
            "temperature": request.temperature if request.temperature is not None else 1.0,
            "text": {"format": text_format or {"type": "text"}},
            "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
            "tools": request.tools or [],
            "top_p": request.top_p if request.top_p is not None else 1.0,
            "top_logprobs": request.top_logprobs,
            "truncation": "disabled",
            "usage": usage,
            "user": request.user,
        }

    def summary(self, reasoning: str) -> list[dict[str, Any]]:
        """A reasoning summary, when the request asked for one: the reasoning's closing paragraph (the
        gateway runs no second model to summarise; docs/responses.md)."""
        if self.request.summary is None or not reasoning.strip():
            return []
        paragraphs = [part.strip() for part in reasoning.strip().split("\n\n") if part.strip()]
        text = paragraphs[-1]
        if len(text) > _SUMMARY_CHARS:
            text = text[: _SUMMARY_CHARS - 1] + "…"
        return [{"type": "summary_text", "text": text}]

    def output(self, message: dict[str, Any], logprobs: Any) -> list[dict[str, Any]]:
        """A chat completion's message as output items: reasoning, then the answer, then tool calls."""
        items = []
        reasoning = message.get("reasoning") or message.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            items.append(reasoning_item(self.id, reasoning, self.summary(reasoning)))
        content = message.get("content")
        if isinstance(content, str) and content:
            parts = logprobs.get("content") if isinstance(logprobs, dict) else None
            items.append(message_item(self.id, content, parts if self.request.logprobs else None))
        for index, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            items.append(
                function_call_item(
                    self.id,
                    index,
                    call.get("id") or "",
                    function.get("name") or "",
                    function.get("arguments") or "",
                )
            )
        return items

    def from_chat(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The response object of a chat completion's body."""
        choices = answer.get("choices") or [{}]
        choice = choices[0]
        output = self.output(choice.get("message") or {}, choice.get("logprobs"))
        status, incomplete = status_of(choice.get("finish_reason"))
        if incomplete is not None and output:
            output[-1]["status"] = "incomplete"  # the item the bound (or the filter) cut short
        usage = answer.get("usage")
        return self.body(
            answer.get("model") or self.request.model,
            status,
            output,
            response_usage(usage) if isinstance(usage, dict) else None,
            incomplete=incomplete,
        )


def status_of(finish_reason: object) -> tuple[str, str | None]:
    """(status, incomplete_details.reason) of a chat finish reason."""
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def reasoning_item(response_id: str, text: str, summary: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": "rs_" + response_id.removeprefix("resp_"),
        "summary": summary,
        "content": [{"type": "reasoning_text", "text": text}],
        "encrypted_content": None,
        "status": "completed",
    }


def message_item(response_id: str, text: str, logprobs: list[Any] | None) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_" + response_id.removeprefix("resp_"),
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}],
    }


def function_call_item(
    response_id: str, index: int, call_id: str, name: str, arguments: str
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{response_id.removeprefix('resp_')}_{index}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def response_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """A chat usage in the Responses API's names, tiergate's own fields (cost, depth) kept."""
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    body: dict[str, Any] = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }
    body.update({key: value for key, value in usage.items() if key not in _CHAT_USAGE})
    return body
