"""A deliberation's answer in OpenAI's shapes: a chat completion body, or the chunks of a stream."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.deliberation.consistency import answer_key, wants_json
from gateway.deliberation.run import Run, Sample

__all__ = ["Chunks", "completion_body", "logprobs", "message", "progress_fields", "usage_body"]


def usage_body(run: Run) -> dict[str, Any]:
    """`usage`, with the reasoning of every sample and extension, and the depth delivered."""
    usage = run.usage()
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens if usage else 0},
        "completion_tokens_details": {"reasoning_tokens": (usage.reasoning_tokens or 0) if usage else 0},
        "reasoning_depth": run.depth_fields(),
    }


def progress_fields(run: Run) -> dict[str, Any]:
    """Where a run of several samples stands (`tiergate.progress` of a stream): samples drawn so far (of
    the most the level draws) in how many waves, those answered, extensions made, and the answers they give,
    normalised as the vote counts them."""
    votes: dict[str, int] = {}
    answered = 0
    structured = wants_json(run.body)
    for sample in run.samples:
        if (sample.content.strip() or sample.tool_calls) and sample.finish_reason is not None:
            answered += 1
            answer = answer_key(sample, structured)
            if answer is not None:
                votes[answer] = votes.get(answer, 0) + 1
    return {
        "samples": len(run.samples),
        "max_samples": run.plan.total_samples,  # adaptive self-consistency may stop before
        "wave": run.waves,
        "answered": answered,
        "extensions": sum(sample.extensions for sample in run.samples),
        "votes": votes,
    }


def message(answer: Sample) -> dict[str, Any]:
    """A delivered sample as an assistant message: its answer, its reasoning, its tool calls."""
    body: dict[str, Any] = {"role": "assistant", "content": answer.content, "reasoning": answer.reasoning}
    if answer.tool_calls:
        body["tool_calls"] = answer.tool_calls
        body["content"] = answer.content or None
    return body


def logprobs(run: Run, answer: Sample) -> dict[str, Any] | None:
    """An answer's logprobs when the request asked for them (its tokens, not its reasoning's)."""
    return {"content": answer.logprobs} if run.body.get("logprobs") else None


def completion_body(run: Run, request_id: str, model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "message": message(answer),
                "finish_reason": answer.finish_reason or "stop",
                "logprobs": logprobs(run, answer),
            }
            for index, answer in enumerate(run.answers)
        ],
        "usage": usage_body(run),
    }


class Chunks:
    """The `data:` events of one streamed chat completion."""

    __slots__ = ("_head",)

    def __init__(self, request_id: str, model: str) -> None:
        self._head = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def delta(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        logprobs: dict[str, Any] | None = None,
        index: int = 0,
    ) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return self._event({**self._head, "choices": [choice]})

    def progress(self, fields: dict[str, Any]) -> bytes:
        """A chunk with nothing to add to the message, and where the run stands."""
        return self._tiergate({"progress": fields})

    def winner(self, sample: int, reasoning: str) -> bytes:
        """The vote chose another sample than the one streamed: which, and its reasoning."""
        return self._tiergate({"winner": {"sample": sample, "reasoning": reasoning}})

    def _tiergate(self, fields: dict[str, Any]) -> bytes:
        # an ordinary chunk (one choice, empty delta), so that a client reading choices[0] never trips
        choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}
        return self._event({**self._head, "choices": [choice], "tiergate": fields})

    def usage(self, usage: dict[str, Any]) -> bytes:
        return self._event({**self._head, "choices": [], "usage": usage})

    @staticmethod
    def _event(body: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(body) + b"\n\n"
