"""A deterministic stand-in for a BPE tokenizer, and the chat template it renders prompts with.

One tokenizer serves usage counts, prefix caching and `/tokenize`, so the three always agree.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from engines.simulator.arithmetic import TaskMarker, find_marker
from engines.simulator.protocol import ChatMessage, ToolCallIn, ToolParam

__all__ = [
    "THINK_CLOSE",
    "THINK_OPEN",
    "Continuation",
    "Prompt",
    "Tokenizer",
    "render_chat",
    "render_completion",
    "thinking",
]

# Words are cut every 6 characters (as BPE splits rare long words), each punctuation mark is a token,
# whitespace belongs to the next word. English comes out near 1.3 tokens per word, like real tokenizers.
_PIECE = re.compile(r"\w{1,6}|[^\w\s]")
_PIECE_WITH_SPACE = re.compile(r"\s*(?:\w{1,6}|[^\w\s])")

# Qwen-style chat template pieces and their ids in Qwen's vocabulary.
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
NEWLINE = "\n"
_SPECIAL_IDS = MappingProxyType({IM_START: 151644, IM_END: 151645, NEWLINE: 198})
_VOCAB_SIZE = 151643

# The delimiters of reasoning written in the text (reasoning models' templates, prompted chain-of-thought).
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# What a continued assistant message leaves open: nothing, an unclosed <think>, or the answer.
Continuation = Literal["none", "reasoning", "content"]


class Tokenizer:
    __slots__ = ()

    def tokenize(self, text: str) -> list[str]:
        return _PIECE.findall(text)

    def count(self, text: str) -> int:
        return len(_PIECE.findall(text))

    def pieces(self, text: str) -> list[str]:
        """The tokens of `text` as generated text: each with the whitespace before it, so that they join
        back into `text` (whitespace at its very end rides on the last token)."""
        pieces = _PIECE_WITH_SPACE.findall(text)
        if pieces:
            tail = len(text) - sum(map(len, pieces))
            if tail:
                pieces[-1] += text[-tail:]
        return pieces

    def token_ids(self, pieces: Sequence[str]) -> list[int]:
        return [_SPECIAL_IDS.get(p) or zlib.crc32(p.encode()) % _VOCAB_SIZE for p in pieces]


@dataclass(frozen=True, slots=True)
class Prompt:
    """A rendered prompt: its token pieces (len = prompt tokens), what generation continues, the task
    it asks (its last `[task: ...]` marker) and the reasoning tokens a continued message carries."""

    tokens: list[str]
    continuation: Continuation = "none"
    task: TaskMarker | None = None
    carried_reasoning: int = 0  # tokens inside the <think> of the assistant message being continued

    def key(self) -> bytes:
        """The bytes that, with the model and seeds, determine the generated text."""
        return "\x00".join(self.tokens).encode()


def render_chat(
    tokenizer: Tokenizer,
    messages: Sequence[ChatMessage],
    *,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    tools: Sequence[ToolParam] | None = None,
) -> Prompt:
    """`<|im_start|>{role}\\n{content}<|im_end|>\\n` per message (5 template tokens), then
    `<|im_start|>assistant\\n` (3) unless the final message is being continued. Tools come first, as
    a system message listing them (`<tools>`, one JSON line each, `</tools>`); the calls of an assistant
    message follow its content, each as `<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`."""
    tokens: list[str] = []
    if tools:
        listed = "\n".join(json.dumps(tool.model_dump(exclude_none=True)) for tool in tools)
        tokens += (IM_START, "system", NEWLINE)
        tokens += tokenizer.tokenize(f"<tools>\n{listed}\n</tools>")
        tokens += (IM_END, NEWLINE)
    texts = [message.text() for message in messages]
    last = len(messages) - 1
    for i, (message, text) in enumerate(zip(messages, texts, strict=True)):
        tokens += (IM_START, message.role, NEWLINE)
        tokens += tokenizer.tokenize(text)
        if message.tool_calls:
            tokens += tokenizer.tokenize(_calls_text(message.tool_calls))
        if not (continue_final_message and i == last):
            tokens += (IM_END, NEWLINE)
    if add_generation_prompt and not continue_final_message:
        tokens += (IM_START, "assistant", NEWLINE)
    continuation: Continuation = "none"
    carried = 0
    if continue_final_message and messages and messages[-1].role == "assistant":
        text = texts[-1]
        # Budget forcing sends the thinking so far, still open; the model goes on thinking.
        continuation = "reasoning" if text.rfind(THINK_OPEN) > text.rfind(THINK_CLOSE) else "content"
        carried = tokenizer.count(thinking(text))
    task = find_marker("\n".join(texts)) if any("[task:" in text for text in texts) else None
    return Prompt(tokens, continuation, task, carried)


def _calls_text(calls: Sequence[ToolCallIn]) -> str:
    texts = []
    for call in calls:
        arguments = call.function.arguments
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        name = json.dumps(call.function.name)
        texts.append(f'<tool_call>\n{{"name": {name}, "arguments": {arguments}}}\n</tool_call>')
    return "\n".join(texts)


def render_completion(tokenizer: Tokenizer, prompt: str | list[int]) -> Prompt:
    if isinstance(prompt, str):
        carried = tokenizer.count(thinking(prompt))
        return Prompt(tokenizer.tokenize(prompt), "none", find_marker(prompt), carried)
    return Prompt([f"<{token_id}>" for token_id in prompt])  # token ids stand for themselves


def thinking(text: str) -> str:
    """The reasoning in the last `<think>` block of `text`, closed or still open (or before a lone
    `</think>`, when the template opened the block); empty when there is none."""
    opened = text.rfind(THINK_OPEN)
    closed = text.rfind(THINK_CLOSE)
    if closed > opened:
        return text[opened + len(THINK_OPEN) if opened != -1 else 0 : closed]
    return text[opened + len(THINK_OPEN) :] if opened != -1 else ""
