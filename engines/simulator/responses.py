"""Response bodies and stream chunks in the exact shapes vLLM sends for chat and text completions."""

from __future__ import annotations

from typing import Any, Literal

import orjson

from engines.simulator import tools
from engines.simulator.plan import ChoicePlan

__all__ = ["DONE", "ChunkEncoder", "Kind", "build_usage", "chat_completion", "text_completion"]

Kind = Literal["chat", "completion"]
DONE = b"data: [DONE]\n\n"


def build_usage(
    prompt_tokens: int, cached_tokens: int, plans: list[ChoicePlan], report_reasoning: bool
) -> dict[str, Any]:
    """Usage of a whole request; reasoning tokens are a subset of completion tokens, cached of prompt."""
    completion = sum(plan.tokens for plan in plans)
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }
    if report_reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": sum(len(plan.reasoning) for plan in plans)}
    return out


def chat_completion(
    request_id: str,
    created: int,
    model: str,
    plans: list[ChoicePlan],
    usage: dict[str, Any],
    reasoning_field: str | None,
) -> bytes:
    choices = []
    for plan in plans:
        content: str | None = "".join(plan.content) if plan.content else None
        calls: list[dict[str, Any]] = []
        finish_reason = plan.finish_reason
        if plan.tool is not None:
            content, calls, finish_reason = tools.make_message(plan.tool, finish_reason)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning_field is not None:
            message[reasoning_field] = "".join(plan.reasoning) if plan.reasoning else None
        if calls:  # vLLM 0.32 leaves out an empty tool_calls
            message["tool_calls"] = calls
        choices.append(
            {
                "index": plan.index,
                "message": message,
                "logprobs": plan.logprobs.chat(0, plan.tokens) if plan.logprobs is not None else None,
                "finish_reason": finish_reason,
                "stop_reason": plan.stop_reason,
            }
        )
    body = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
        "prompt_logprobs": None,
    }
    return orjson.dumps(body)


def text_completion(
    request_id: str, created: int, model: str, plans: list[ChoicePlan], usage: dict[str, Any]
) -> bytes:
    choices = [
        {
            "index": plan.index,
            "text": "".join(plan.content),
            "logprobs": plan.logprobs.completion(0, plan.tokens) if plan.logprobs is not None else None,
            "finish_reason": plan.finish_reason,
            "stop_reason": plan.stop_reason,
        }
        for plan in plans
    ]
    body = {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
    }
    return orjson.dumps(body)


class ChunkEncoder:
    """SSE events of one stream. The envelope (id, object, created, model) is encoded once."""

    __slots__ = ("_head", "_kind", "_prompt", "_reasoning_field", "_tail")

    def __init__(
        self,
        kind: Kind,
        request_id: str,
        created: int,
        model: str,
        include_usage: bool,
        reasoning_field: str | None,
        continuous_prompt: int | None = None,
    ) -> None:
        """`continuous_prompt`: the prompt's tokens, for vLLM's `continuous_usage_stats` (every chunk then
        carries the usage of its choice so far); None without it."""
        self._kind = kind
        self._reasoning_field = reasoning_field
        self._prompt = continuous_prompt
        envelope = orjson.dumps(
            {
                "id": f"chatcmpl-{request_id}" if kind == "chat" else f"cmpl-{request_id}",
                "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
                "created": created,
                "model": model,
            }
        )
        self._head = b"data: " + envelope[:-1] + b',"choices":'
        # With include_usage every chunk carries "usage": null and only the last one the usage.
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def _event(self, choice: dict[str, Any], generated: int = 0) -> bytes:
        if self._prompt is not None:  # as vLLM: the prompt, and the tokens of the chunk's choice so far
            usage = {
                "prompt_tokens": self._prompt,
                "total_tokens": self._prompt + generated,
                "completion_tokens": generated,
            }
            tail = b',"usage":' + orjson.dumps(usage) + b"}\n\n"
            return self._head + b"[" + orjson.dumps(choice) + b"]" + tail
        return self._head + b"[" + orjson.dumps(choice) + b"]" + self._tail

    def role(self, index: int) -> bytes:
        """The first chunk of a chat choice, before any token."""
        delta = {"role": "assistant", "content": ""}
        return self._event({"index": index, "delta": delta, "logprobs": None, "finish_reason": None})

    def tokens(self, plan: ChoicePlan, start: int, size: int) -> bytes | None:
        """The chunk of one engine step: tokens [start, start + size) of the choice. None when vLLM
        sends nothing for them: tool-call markup, unless logprobs are asked or the choice ends there."""
        end = start + size
        last = end >= plan.tokens
        boundary = len(plan.reasoning)
        content = plan.content[max(start - boundary, 0) : end - boundary] if end > boundary else None
        choice: dict[str, Any] = {"index": plan.index}
        finish_reason = plan.finish_reason
        if self._kind == "chat":
            delta: dict[str, Any] = {}
            if plan.tool is not None:
                if content is not None:
                    delta = tools.delta(plan.tool, max(start - boundary, 0), end - boundary) or {}
                if last:
                    finish_reason = tools.stream_finish_reason(plan.tool, finish_reason)
            elif content is not None:
                delta["content"] = "".join(content)
            if start < boundary:
                delta[self._reasoning_field or "reasoning"] = "".join(plan.reasoning[start:end])
            if not delta and not last and plan.logprobs is None:
                return None
            choice["delta"] = delta
            choice["logprobs"] = plan.logprobs.chat(start, end) if plan.logprobs is not None else None
        else:
            choice["text"] = "".join(content or ())
            choice["logprobs"] = plan.logprobs.completion(start, end) if plan.logprobs is not None else None
        choice["finish_reason"] = finish_reason if last else None
        if last:
            choice["stop_reason"] = plan.stop_reason
        return self._event(choice, min(end, plan.tokens))

    def usage(self, usage: dict[str, Any]) -> bytes:
        """The final chunk: no choices, the request's usage."""
        return self._head + b'[],"usage":' + orjson.dumps(usage) + b"}\n\n"
