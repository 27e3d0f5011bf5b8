"""What a choice writes when the request constrains its output (a tool call, a JSON object), and where
the parts of that text lie, so that the response can be cut out of it as vLLM's parsers cut theirs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal, Protocol

__all__ = ["CallSpan", "ToolFormat", "ToolOutput", "Writer", "Written"]

# How the generated text holds the calls, after vLLM's paths for each tool_choice:
#   "named"     a named function: the text is its arguments (guided JSON)
#   "required"  `required`: a JSON array of {"name": ..., "parameters": {...}} (guided JSON)
#   "hermes"    `auto`, the hermes parser (Qwen's): <tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>
ToolFormat = Literal["named", "required", "hermes"]


@dataclass(frozen=True, slots=True)
class CallSpan:
    """One call in the text, by character offsets: its header (id, name) goes out in the stream once
    `reveal` characters are out (vLLM's parser has seen the whole name by then), its arguments are
    text[args_start:args_end]."""

    name: str
    reveal: int
    args_start: int
    args_end: int


@dataclass(frozen=True, slots=True)
class Written:
    text: str
    format: ToolFormat | None = None  # None: the text is the content (JSON), nothing to parse
    calls: tuple[CallSpan, ...] = ()


class Writer(Protocol):
    def write(self, seed: int) -> Written:
        """The text for one choice; the same seed writes the same text."""
        ...


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """The tool-call text a choice generated (a stop string or max_tokens may have cut it short), with
    the character offset at which each of its tokens starts, and its length last."""

    format: ToolFormat
    calls: tuple[CallSpan, ...]
    text: str
    offsets: tuple[int, ...]

    @classmethod
    def of(cls, written: Written, pieces: Sequence[str]) -> ToolOutput:
        assert written.format is not None
        offsets = (0, *accumulate(map(len, pieces)))
        return cls(written.format, written.calls, "".join(pieces), offsets)
