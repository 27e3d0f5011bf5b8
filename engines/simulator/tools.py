"""Tool calling as vLLM serves it with `--enable-auto-tool-choice --tool-call-parser hermes` (a Qwen model).

When a choice calls (the rules; all deterministic):
- `tool_choice` "none", or no `tools`: never.
- a named function: always, that function, once.
- "required": the tools whose names the last user message mentions (whole words, in the order of
  `tools`), each once; when it mentions none, one tool drawn from the request's seed and prompt.
- "auto" (the default with tools): the tools the last user message mentions, only when that message
  is the last of the conversation; otherwise (nothing mentioned, or the last message is a tool result)
  the model answers in text.
- `parallel_tool_calls: false`: only the first of those calls is written.
Arguments are drawn from each function's `parameters` schema (engines/simulator/schema_values.py).

The text is written the way vLLM's path for that choice makes the model write it (constrained.ToolFormat),
and cut into the response by vLLM's rules: `make_message` for a whole response, `delta` for a stream.
"""

from __future__ import annotations

import json
import os
import random
import re
from typing import Any

from engines.simulator.constrained import CallSpan, ToolFormat, ToolOutput, Written
from engines.simulator.protocol import ChatRequest, FunctionDefinition, NamedToolChoice
from engines.simulator.schema_values import value_for

__all__ = ["ToolWriter", "delta", "make_message", "stream_finish_reason", "tool_writer"]

_CALL_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)
_OPEN = "<tool_call>"


class ToolWriter:
    """Writes the calls of one choice: the functions given, or one of them when `pick_one`."""

    __slots__ = ("_format", "_functions", "_pick_one")

    def __init__(self, format: ToolFormat, functions: list[FunctionDefinition], pick_one: bool) -> None:
        self._format = format
        self._functions = functions
        self._pick_one = pick_one

    def write(self, seed: int) -> Written:
        rng = random.Random(seed)
        functions = [rng.choice(self._functions)] if self._pick_one else self._functions
        calls = [(f.name, json.dumps(_arguments(f, rng), ensure_ascii=False)) for f in functions]
        if self._format == "named":
            name, arguments = calls[0]
            return Written(arguments, "named", (CallSpan(name, 1, 0, len(arguments)),))
        text = "[" if self._format == "required" else ""
        spans = []
        for i, (name, arguments) in enumerate(calls):
            if self._format == "required":
                head = ", " * (i > 0) + '{"name": ' + json.dumps(name, ensure_ascii=False)
                name_end = len(text) + len(head)
                head += ', "parameters": '
            else:
                head = "\n" * (i > 0) + '<tool_call>\n{"name": ' + json.dumps(name, ensure_ascii=False)
                name_end = len(text) + len(head)
                head += ', "arguments": '
            start = len(text) + len(head)
            # vLLM's "required" path announces a call once its arguments have begun; hermes at its name.
            reveal = start + 1 if self._format == "required" else name_end
            spans.append(CallSpan(name, reveal, start, start + len(arguments)))
            text += head + arguments + ("}" if self._format == "required" else "}\n</tool_call>")
        if self._format == "required":
            text += "]"
        return Written(text, self._format, tuple(spans))


def _arguments(function: FunctionDefinition, rng: random.Random) -> Any:
    schema = function.parameters or {}
    if "type" not in schema:  # the parameters of a function are an object, whether or not it says so
        schema = {"type": "object", **schema}
    return value_for(schema, rng)


def tool_writer(request: ChatRequest) -> ToolWriter | None:
    """The writer of this request's calls, or None when its choices answer in text (module docstring)."""
    tools = request.tools
    choice = request.tool_choice_used
    if not tools or choice == "none":
        return None
    if isinstance(choice, NamedToolChoice):
        named = next(t.function for t in tools if t.function.name == choice.function.name)
        return ToolWriter("named", [named], pick_one=False)
    last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
    text = last_user.text() if last_user is not None else ""
    mentioned = [t.function for t in tools if _mentions(text, t.function.name)]
    if choice == "auto" and (not mentioned or request.messages[-1] is not last_user):
        return None
    if request.parallel_tool_calls is False:
        mentioned = mentioned[:1]
    if mentioned:
        return ToolWriter("required" if choice == "required" else "hermes", mentioned, pick_one=False)
    return ToolWriter("required", [t.function for t in tools], pick_one=True)


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def _call(name: str, arguments: str) -> dict[str, Any]:
    # vLLM's ids: "chatcmpl-tool-" and 16 random hex digits (vllm.utils.random_uuid).
    return {
        "id": f"chatcmpl-tool-{os.urandom(8).hex()}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def make_message(out: ToolOutput, finish_reason: str) -> tuple[str | None, list[dict[str, Any]], str]:
    """(content, tool_calls, finish_reason) of a whole response, as vLLM's serving parses the text:
    a named or required choice has content "" and finishes "stop" (named) or "tool_calls" (required,
    when generation stopped on its own); auto calls finish "tool_calls". A text cut short by max_tokens
    parses as vLLM's parsers parse it: named keeps its partial arguments, required and auto lose their
    calls (auto then returns the raw text as content)."""
    text = out.text
    if out.format == "named":
        return "", ([_call(out.calls[0].name, text)] if text.strip() else []), finish_reason
    if out.format == "required":
        calls = []
        try:
            parsed = json.loads(text)
            calls = [_call(c["name"], json.dumps(c["parameters"], ensure_ascii=False)) for c in parsed]
        except (ValueError, TypeError, KeyError):
            pass
        return "", calls, "tool_calls" if finish_reason == "stop" else finish_reason
    if _OPEN not in text:
        return text or None, [], finish_reason
    try:
        blocks = [json.loads(a or b) for a, b in _CALL_BLOCK.findall(text)]
        calls = [_call(c["name"], json.dumps(c["arguments"], ensure_ascii=False)) for c in blocks]
    except (ValueError, TypeError, KeyError):
        return text, [], finish_reason
    before = text[: text.find(_OPEN)]
    return (before if before.strip() else None), calls, "tool_calls"


def delta(out: ToolOutput, start: int, end: int) -> dict[str, Any] | None:
    """The tool part of the stream delta for tokens [start, end) of the text, as vLLM streams it (None
    when these tokens show nothing, e.g. the `<tool_call>` markup): a call's first delta carries its id,
    type and name (named and required: with the arguments so far; hermes: alone, the arguments follow in
    an entry of their own); later ones carry the index and an argument fragment (required: with
    `"name": null`). Hermes deltas carry `"content": null`."""
    offsets = out.offsets
    first, last = offsets[min(start, len(offsets) - 1)], offsets[min(end, len(offsets) - 1)]
    entries: list[dict[str, Any]] = []
    for index, call in enumerate(out.calls):
        fragment = out.text[max(call.args_start, first) : min(call.args_end, last)]
        if first < call.reveal <= last:
            function: dict[str, Any] = {"name": call.name}
            if out.format != "hermes":
                function["arguments"] = fragment
            header = {"id": f"chatcmpl-tool-{os.urandom(8).hex()}", "type": "function", "index": index}
            entries.append({**header, "function": function})
            if out.format != "hermes" or not fragment:
                continue
        elif call.reveal > last or not fragment:
            continue
        function = (
            {"name": None, "arguments": fragment} if out.format == "required" else {"arguments": fragment}
        )
        entries.append({"index": index, "function": function})
    if not entries:
        return None
    return {"content": None, "tool_calls": entries} if out.format == "hermes" else {"tool_calls": entries}


def stream_finish_reason(out: ToolOutput, finish_reason: str) -> str:
    """vLLM: "tool_calls" once a call was streamed, unless the function was named or generation was cut."""
    streamed = any(call.reveal <= len(out.text) for call in out.calls)
    return "tool_calls" if streamed and out.format != "named" and finish_reason == "stop" else finish_reason
