"""A chat completion stream as the Responses API's typed events: `response.created`, `.in_progress`, each
output item's `added` / deltas / `done` events, then `response.completed` (or `.incomplete`, or `error` and
`response.failed`), each with its `sequence_number`, so that the OpenAI SDKs' `responses.stream()` helpers
rebuild the same response object the stream ends with."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.responses.output import (
    Shell,
    function_call_item,
    message_item,
    reasoning_item,
    response_usage,
    status_of,
)

__all__ = ["ResponseEvents"]

_TEXT_DELTA = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'
)
_TEXT_TAIL = b',"logprobs":[]}\n\n'


class ResponseEvents:
    """Feeds on the chat chunks of one stream, gives the SSE bytes of the Responses events they make."""

    def __init__(self, shell: Shell, model: str) -> None:
        self._shell = shell
        self._model = model
        self._sequence = 0
        self.output: list[dict[str, Any]] = []  # the items so far, each as it will be when done
        self._open: dict[str, Any] | None = None  # the item whose deltas are coming
        self._index: dict[str, int] = {}  # an item's id -> its output_index
        self._calls: dict[int, dict[str, Any]] = {}  # a tool call's stream index -> its item
        self._winner: str | None = (
            None  # the reasoning of the sample the vote chose, when not the one streamed
        )
        self._logprobs: list[Any] = []
        self._text: list[str] | None = None  # the open message's text so far (None: no message is open)
        self._text_at = b""  # its text deltas' fields after sequence_number, up to the delta's value
        self._finish: object = None
        self._usage: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None  # the response object the stream ended with

    def opening(self) -> bytes:
        response = orjson.Fragment(orjson.dumps(self._shell.body(self._model, "in_progress", [], None)))
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """The events of one chat chunk (a `data:` payload)."""
        choices = chunk.get("choices")
        if self._text is not None and choices and len(choices) == 1 and not chunk.get("usage"):
            # the common case, a piece of the answer while its message is open: one event, no dicts
            choice = choices[0]
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if (
                content
                and type(content) is str
                and choice.get("finish_reason") is None
                and choice.get("logprobs") is None
                and not choice.get("index")
                and not delta.get("reasoning")
                and not delta.get("reasoning_content")
                and not delta.get("tool_calls")
                and "tiergate" not in chunk
            ):
                self._text.append(content)
                sequence = self._sequence
                self._sequence += 1
                return b"%b%d%b%b%b" % (
                    _TEXT_DELTA,
                    sequence,
                    self._text_at,
                    orjson.dumps(content),
                    _TEXT_TAIL,
                )
        error = chunk.get("error")
        if error is not None:
            return self.failed(error if isinstance(error, dict) else {"message": str(error)})
        tiergate = chunk.get("tiergate")
        if isinstance(tiergate, dict) and isinstance(tiergate.get("winner"), dict):
            self._winner = str(tiergate["winner"].get("reasoning") or "")
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = response_usage(usage)
        out = b""
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # one answer: the Responses API has no n
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                out += self._reasoning(reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                out += self._content(content)
            for call in delta.get("tool_calls") or ():
                out += self._tool_call(call)
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
                self._logprobs.extend(logprobs["content"])
            if choice.get("finish_reason") is not None:
                self._finish = choice["finish_reason"]
        return out

    def completed(self) -> bytes:
        """The stream's end: every item done; `final` is the response (`final_event()` sends it). The item the
        bound cut short, when it did, ends `incomplete`."""
        status, incomplete = status_of(self._finish)
        if incomplete is not None and self._open is not None:
            self._open["status"] = "incomplete"
        out = self._close()
        if self._winner and not any(item["type"] == "reasoning" for item in self.output):
            out += self._reasoning(self._winner) + self._close()
        self.final = self._shell.body(self._model, status, self.output, self._usage, incomplete=incomplete)
        return out

    def failed(self, error: dict[str, Any]) -> bytes:
        """An engine failure mid-stream: the `error` event (`final_event()` then sends `response.failed`
        with what was generated)."""
        code = error.get("code")
        message = str(error.get("message") or "The engine failed.")
        out = self._close()
        self.final = self._shell.body(
            self._model, "failed", self.output, self._usage, error={"code": code, "message": message}
        )
        return out + self._event("error", code=code, message=message, param=error.get("param"))

    def final_event(self) -> bytes:
        """The last event: the response as it ended (`response.completed`, `.incomplete` or `.failed`)."""
        assert self.final is not None  # its status names the event: completed, incomplete or failed
        return self._event(f"response.{self.final['status']}", response=self.final)

    def _reasoning(self, text: str) -> bytes:
        out = b""
        item = self._open
        if item is None or item["type"] != "reasoning":
            out += self._close()
            out += self._add(reasoning_item(self._shell.id, "", []))
            item = self._open
            assert item is not None
            part = {"type": "reasoning_text", "text": ""}
            out += self._event("response.content_part.added", **self._at(item), content_index=0, part=part)
        item["content"][0]["text"] += text
        return out + self._event(
            "response.reasoning_text.delta", **self._at(item), content_index=0, delta=text
        )

    def _content(self, text: str) -> bytes:
        out = b""
        item = self._open
        if item is None or item["type"] != "message" or self._text is None:
            out += self._close()
            out += self._add(message_item(self._shell.id, "", None))
            item = self._open
            assert item is not None
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            at = self._at(item)
            out += self._event("response.content_part.added", **at, content_index=0, part=part)
            self._text = []
            self._text_at = b',"item_id":%b,"output_index":%d,"content_index":0,"delta":' % (
                orjson.dumps(item["id"]),
                at["output_index"],
            )
        self._text.append(text)
        return out + self._event(
            "response.output_text.delta", **self._at(item), content_index=0, delta=text, logprobs=[]
        )

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = call.get("index", 0)
        function = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            out += self._close()
            fresh = function_call_item(
                self._shell.id, index, call.get("id") or "", function.get("name") or "", ""
            )
            out += self._add(fresh)
            item = self._calls[index] = fresh
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            out += self._event("response.function_call_arguments.delta", **self._at(item), delta=arguments)
        return out

    def _add(self, item: dict[str, Any]) -> bytes:
        """A new item, open from now on: its `added` event."""
        self._index[item["id"]] = len(self.output)
        self.output.append(item)
        self._open = item
        added = {**item, "status": "in_progress"}
        if item["type"] != "function_call":
            added["content"] = []
        return self._event("response.output_item.added", output_index=len(self.output) - 1, item=added)

    def _at(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self._index[item["id"]]}

    def _close(self) -> bytes:
        """The `done` events of the open item."""
        item = self._open
        if item is None:
            return b""
        self._open = None
        at = self._at(item)
        kind = item["type"]
        out = b""
        if kind == "reasoning":
            part = item["content"][0]
            if self._winner:  # the vote chose another sample than the one streamed: its reasoning
                part["text"] = self._winner
            out += self._event("response.reasoning_text.done", **at, content_index=0, text=part["text"])
            out += self._event("response.content_part.done", **at, content_index=0, part=part)
            item["summary"] = self._shell.summary(part["text"])
            for index, summary in enumerate(item["summary"]):
                empty = {"type": "summary_text", "text": ""}
                out += self._event(
                    "response.reasoning_summary_part.added", **at, summary_index=index, part=empty
                )
                text = summary["text"]
                out += self._event(
                    "response.reasoning_summary_text.delta", **at, summary_index=index, delta=text
                )
                out += self._event(
                    "response.reasoning_summary_text.done", **at, summary_index=index, text=text
                )
                out += self._event(
                    "response.reasoning_summary_part.done", **at, summary_index=index, part=summary
                )
        elif kind == "message":
            part = item["content"][0]
            part["text"] = "".join(self._text or ())
            self._text = None
            if self._shell.request.logprobs:
                part["logprobs"] = self._logprobs
            out += self._event(
                "response.output_text.done",
                **at,
                content_index=0,
                text=part["text"],
                logprobs=part["logprobs"],
            )
            out += self._event("response.content_part.done", **at, content_index=0, part=part)
        else:
            out += self._event(
                "response.function_call_arguments.done", **at, arguments=item["arguments"], name=item["name"]
            )
        return out + self._event("response.output_item.done", output_index=at["output_index"], item=item)

    def _event(self, kind: str, **fields: Any) -> bytes:
        body = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"
