"""Token usage as an engine reports it, and a tally of what a stream generated."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StreamTally", "Usage", "is_usage_chunk"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one engine response. `reasoning_tokens` is a subset of `completion_tokens`
    and None when the engine did not report it (many vLLM releases don't)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_payload(cls, usage: Any) -> Usage | None:
        """Read an OpenAI `usage` object; None when it is absent or not usage-shaped."""
        if not isinstance(usage, dict):
            return None
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        cached = _detail(usage.get("prompt_tokens_details"), "cached_tokens") or 0
        reasoning = _detail(usage.get("completion_tokens_details"), "reasoning_tokens")
        return cls(prompt, completion, cached, reasoning)


def _detail(details: Any, key: str) -> int | None:
    if isinstance(details, dict):
        value = details.get(key)
        if isinstance(value, int):
            return value
    return None


def is_usage_chunk(payload: dict[str, Any]) -> bool:
    """Whether a stream's event is its usage chunk: a `usage` field and no choices (what `include_usage` adds
    before [DONE]). A stream counts them as it decodes; the relay finds them by the same test."""
    return "usage" in payload and not payload.get("choices")


@dataclass(slots=True)
class StreamTally:
    """What a stream has generated so far, kept so that a stream cut short (client gone, engine
    dead) can still be metered: text per choice, and the count of deltas that carried text."""

    content: dict[int, list[str]] = field(default_factory=dict)
    reasoning: dict[int, list[str]] = field(default_factory=dict)
    content_deltas: int = 0
    reasoning_deltas: int = 0
    finish_reasons: dict[int, str] = field(default_factory=dict)
    # how many of each choice's pieces are blocks (joined pieces): the others come after them
    _blocks_content: dict[int, int] = field(default_factory=dict, repr=False, compare=False)
    _blocks_reasoning: dict[int, int] = field(default_factory=dict, repr=False, compare=False)

    def observe(self, payload: dict[str, Any]) -> None:
        self.observe_all((payload,))

    def observe_all(self, payloads: Iterable[dict[str, Any]]) -> None:
        """Take in the events of a stream, in order (a read's worth at once: this runs for every token)."""
        content, reasoning_texts, reasons = self.content, self.reasoning, self.finish_reasons
        content_blocks, reasoning_blocks = self._blocks_content, self._blocks_reasoning
        for payload in payloads:
            choices = payload.get("choices")
            if not choices:
                continue
            for choice in choices:
                delta = choice.get("delta")
                if delta is None:  # legacy completions stream: text sits on the choice itself
                    text = choice.get("text")
                    reasoning = None
                else:
                    text = delta.get("content")
                    reasoning = delta.get("reasoning")
                    if reasoning is None:
                        reasoning = delta.get("reasoning_content")
                index = choice.get("index", 0)
                if text:
                    if (parts := content.get(index)) is None:
                        parts = content[index] = []
                    parts.append(text)
                    if len(parts) - content_blocks.get(index, 0) == _BLOCK:
                        content_blocks[index] = _join_block(parts)
                    self.content_deltas += 1
                if reasoning:
                    if (parts := reasoning_texts.get(index)) is None:
                        parts = reasoning_texts[index] = []
                    parts.append(reasoning)
                    if len(parts) - reasoning_blocks.get(index, 0) == _BLOCK:
                        reasoning_blocks[index] = _join_block(parts)
                    self.reasoning_deltas += 1
                if reason := choice.get("finish_reason"):
                    reasons[index] = reason

    def observe_reply(self, payload: dict[str, Any]) -> None:
        """Take in a whole (non-streamed) response: `message` of chat choices, `text` of completions."""
        for choice in payload.get("choices") or ():
            message = choice.get("message")
            if message is None:
                self.observe({"choices": [choice]})
                continue
            reasoning = message.get("reasoning")
            if reasoning is None:
                reasoning = message.get("reasoning_content")
            delta = {"content": message.get("content"), "reasoning": reasoning}
            self.observe({"choices": [{**choice, "delta": delta}]})

    @property
    def generated_chars(self) -> tuple[int, int]:
        """Characters of content and of reasoning generated, over all choices."""
        return (
            sum(len(part) for parts in self.content.values() for part in parts),
            sum(len(part) for parts in self.reasoning.values() for part in parts),
        )

    def text(self, index: int = 0) -> str:
        return "".join(self.content.get(index, ()))

    def reasoning_text(self, index: int = 0) -> str:
        return "".join(self.reasoning.get(index, ()))


_BLOCK = 64  # a choice's text is kept in blocks of 64 deltas: a token as a string of its own costs ~50 bytes


def _join_block(parts: list[str]) -> int:
    """Join a choice's last `_BLOCK` pieces into one string (a block); returns the number of blocks."""
    parts[-_BLOCK:] = ["".join(parts[-_BLOCK:])]
    return len(parts)
