"""A call's tool calls, put together from the fragments an engine streams (OpenAI's chunk shape: the first
fragment of a call carries its index, id, type and function name; the next ones pieces of its arguments), and
the key by which self-consistency compares two samples' calls."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["ToolCallParts", "calls_key"]


class ToolCallParts:
    """The tool calls of one choice of one engine call, as they stream."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, fragments: object) -> None:
        if not isinstance(fragments, list):
            return
        for fragment in fragments:
            if not isinstance(fragment, dict):
                continue
            index = fragment.get("index", len(self._calls))
            call = self._calls.get(index)
            if call is None:
                call = self._calls[index] = {
                    "id": "",
                    "type": "function",
                    "function": {"name": "", "arguments": ""},
                }
            if isinstance(fragment.get("id"), str):
                call["id"] = fragment["id"]
            function = fragment.get("function")
            if isinstance(function, dict):
                if isinstance(function.get("name"), str) and function["name"]:
                    call["function"]["name"] = function["name"]
                if isinstance(function.get("arguments"), str):
                    call["function"]["arguments"] += function["arguments"]

    @property
    def chars(self) -> int:
        """Characters of the calls' names and arguments: their share of the call's answer tokens."""
        return sum(len(c["function"]["name"]) + len(c["function"]["arguments"]) for c in self._calls.values())

    def calls(self) -> list[dict[str, Any]]:
        """The calls in OpenAI's message shape, in index order."""
        return [self._calls[index] for index in sorted(self._calls)]


def calls_key(calls: list[dict[str, Any]]) -> str:
    """Calls compared as self-consistency votes: each function's name and its arguments as canonical JSON
    (keys sorted, spacing dropped), so that `{"b": 1, "a": 2}` and `{"a":2,"b":1}` agree. Ids differ by
    sample and never count."""
    canonical = []
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments") or ""
        try:
            parsed: Any = orjson.loads(arguments) if arguments else {}
            arguments = orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONDecodeError:
            arguments = arguments.strip()
        canonical.append([function.get("name") or "", arguments])
    return "tools:" + orjson.dumps(canonical).decode()
