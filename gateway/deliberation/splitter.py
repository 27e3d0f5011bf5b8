"""Reasoning and answer out of one text, for models that reason in their content between delimiters (the
prompted chain-of-thought of plain instruct models), fed piece by piece as a stream arrives."""

from __future__ import annotations

from typing import Literal

__all__ = ["ThinkSplitter"]

State = Literal["before", "inside", "after"]


class ThinkSplitter:
    """`feed(text)` returns the (reasoning, content) that text completes. A delimiter split across pieces is
    held back until it is whole; text before the opening delimiter is content (a model that skipped it)."""

    __slots__ = ("_close", "_held", "_open", "state")

    def __init__(self, think_open: str, think_close: str, state: State = "before") -> None:
        self._open = think_open
        self._close = think_close
        self._held = ""
        self.state: State = state

    def feed(self, text: str) -> tuple[str, str]:
        reasoning: list[str] = []
        content: list[str] = []
        text = self._held + text
        self._held = ""
        while text:
            if self.state == "after":
                content.append(text)
                break
            delimiter = self._open if self.state == "before" else self._close
            at = text.find(delimiter)
            if at >= 0:
                (content if self.state == "before" else reasoning).append(text[:at])
                text = text[at + len(delimiter) :]
                self.state = "inside" if self.state == "before" else "after"
                continue
            keep = _partial_suffix(text, delimiter)
            self._held = text[len(text) - keep :]
            # before the opening delimiter it is content: a model that answers without thinking
            (content if self.state == "before" else reasoning).append(text[: len(text) - keep])
            break
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        """What was held back, once the text is complete."""
        held, self._held = self._held, ""
        return ("", held) if self.state != "inside" else (held, "")


def _partial_suffix(text: str, delimiter: str) -> int:
    """The length of the longest end of `text` that begins `delimiter`."""
    for size in range(min(len(text), len(delimiter) - 1), 0, -1):
        if delimiter.startswith(text[-size:]):
            return size
    return 0
