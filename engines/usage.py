"""Token usage as an engine reports it, and a tally of what a stream generated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["StreamTally", "Usage"]


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


@dataclass(slots=True)
class StreamTally:
    """What a stream has generated so far, kept so that a stream cut short (client gone, engine
    dead) can still be metered: text per choice, and the count of deltas that carried text."""

    content: dict[int, list[str]] = field(default_factory=dict)
    reasoning: dict[int, list[str]] = field(default_factory=dict)
    content_deltas: int = 0
    reasoning_deltas: int = 0
    finish_reasons: dict[int, str] = field(default_factory=dict)
    # pieces of each choice's text not yet joined into a block (`_keep`)
    _loose_content: dict[int, int] = field(default_factory=dict, repr=False, compare=False)
    _loose_reasoning: dict[int, int] = field(default_factory=dict, repr=False, compare=False)

    def observe(self, payload: dict[str, Any]) -> None:
        choices = payload.get("choices")
        if not choices:
            return
        for choice in choices:
            index = choice.get("index", 0)
            delta = choice.get("delta")
            if delta is None:  # legacy completions stream: text sits on the choice itself
                text = choice.get("text")
                reasoning = None
            else:
                text = delta.get("content")
                reasoning = delta.get("reasoning")
                if reasoning is None:
                    reasoning = delta.get("reasoning_content")
            if text:
                _keep(self.content, self._loose_content, index, text)
                self.content_deltas += 1
            if reasoning:
                _keep(self.reasoning, self._loose_reasoning, index, reasoning)
                self.reasoning_deltas += 1
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reasons[index] = reason

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


def _keep(texts: dict[int, list[str]], loose: dict[int, int], index: int, piece: str) -> None:
    """Append `piece` to choice `index`'s text; every `_BLOCK` pieces become one string."""
    if (parts := texts.get(index)) is None:
        parts = texts[index] = []
    parts.append(piece)
    count = loose.get(index, 0) + 1
    if count == _BLOCK:
        parts[-_BLOCK:] = ["".join(parts[-_BLOCK:])]
        count = 0
    loose[index] = count
