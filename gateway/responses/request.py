"""A Responses API request (`POST /v1/responses`), checked at the edge, and its translation into the chat
completion the engines serve: every Responses field either maps to a chat field the engine honours, is kept
by the gateway (metadata, store, previous_response_id), or is refused with a 400 naming it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.http.errors import GatewayError
from gateway.http.schemas import MAX_OUTPUT_TOKENS, ServiceTier, check_request

__all__ = ["ResponsesRequest", "chat_body", "check_responses_request", "input_items", "messages_of"]

_Prob = Annotated[float, Field(ge=0, le=2)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Reasoning(_Closed):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None  # its older name


class TextSettings(_Closed):
    format: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesRequest(_Open):
    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_OUTPUT_TOKENS)
    reasoning: Reasoning | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextSettings | None = None
    temperature: _Prob | None = None
    top_p: float | None = Field(None, ge=0, le=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    store: bool | None = None
    previous_response_id: str | None = Field(None, min_length=1)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    include: list[str] | None = None
    truncation: Literal["disabled"] | None = None
    service_tier: ServiceTier = None
    background: Literal[False] | None = None

    @property
    def streaming(self) -> bool:
        return self.stream is True

    @property
    def stored(self) -> bool:
        return self.store is not False  # OpenAI's default: stored

    @property
    def summary(self) -> str | None:
        reasoning = self.reasoning
        return None if reasoning is None else reasoning.summary or reasoning.generate_summary

    @property
    def logprobs(self) -> bool:
        return "message.output_text.logprobs" in (self.include or ())


# Responses parameters the gateway does not serve: refused by name, never dropped
_UNSUPPORTED = {
    "background": "background responses are not served: send the request and wait for it, or stream it",
    "conversation": "the Conversations API is not served: continue with previous_response_id",
    "prompt": "stored prompt templates are not served: send the instructions and input",
    "max_tool_calls": "the engines do not bound the number of tool calls",
    "n": "the Responses API returns one answer; the chat completions API takes n",
}
_INCLUDES = frozenset({"message.output_text.logprobs", "reasoning.encrypted_content"})
_SUPPORTED_INCLUDES = frozenset({"message.output_text.logprobs"})


def check_responses_request(data: dict[str, Any]) -> ResponsesRequest:
    """`data` as a ResponsesRequest, or a 400 naming the parameter (`unsupported_parameter` for the
    Responses parameters the gateway does not serve)."""
    for name, why in _UNSUPPORTED.items():
        if data.get(name) not in (None, False):
            raise _unsupported(name, why)
    checked = check_request(ResponsesRequest, data)
    for index, name in enumerate(checked.include or ()):
        if name not in _SUPPORTED_INCLUDES:
            why = (
                "the gateway keeps no encrypted reasoning: reasoning comes back as text, or is kept with a"
                " stored response for previous_response_id"
                if name in _INCLUDES
                else "the only value served is message.output_text.logprobs"
            )
            raise _unsupported(f"include[{index}]", f"{name!r}: {why}")
    for key, value in (checked.metadata or {}).items():
        if len(key) > 64 or len(value) > 512:
            raise GatewayError(
                400,
                "Invalid 'metadata': keys are at most 64 characters and values at most 512.",
                code="invalid_value",
                param="metadata",
            )
    return checked


def _unsupported(param: str, why: str) -> GatewayError:
    return GatewayError(
        400, f"Unsupported parameter: '{param}': {why}.", code="unsupported_parameter", param=param
    )


def _invalid(param: str, message: str) -> GatewayError:
    return GatewayError(400, f"Invalid '{param}': {message}.", code="invalid_value", param=param)


def input_items(checked: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's input as a list of items (a string is one user message), each checked."""
    if isinstance(checked.input, str):
        return [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": checked.input}]}
        ]
    items = []
    for index, item in enumerate(checked.input):
        items.append(_item(item, f"input[{index}]"))
    if not items:
        raise _invalid("input", "the input needs at least one item")
    return items


_ROLES = frozenset({"user", "system", "developer", "assistant"})
_PART_TYPES = {
    "user": frozenset({"input_text", "input_image"}),
    "system": frozenset({"input_text"}),
    "developer": frozenset({"input_text"}),
    "assistant": frozenset({"output_text", "refusal", "input_text"}),
}


def _item(item: dict[str, Any], where: str) -> dict[str, Any]:
    """One input item, normalised (a message's string content as one text part), or a 400 naming it."""
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise _invalid(f"{where}.role", f"{role!r} is not one of user, system, developer, assistant")
        content = item.get("content")
        part_type = "output_text" if role == "assistant" else "input_text"
        if isinstance(content, str):
            parts = [{"type": part_type, "text": content}]
        elif isinstance(content, list):
            parts = [_part(part, role, f"{where}.content[{i}]") for i, part in enumerate(content)]
        else:
            raise _invalid(f"{where}.content", "a message's content is a string or a list of content parts")
        return {"type": "message", "role": role, "content": parts}
    if kind == "function_call":
        for field in ("call_id", "name", "arguments"):
            if not isinstance(item.get(field), str):
                raise _invalid(f"{where}.{field}", "a function_call item needs call_id, name and arguments")
        return {key: item[key] for key in ("type", "call_id", "name", "arguments", "id") if key in item}
    if kind == "function_call_output":
        output = item.get("output")
        if not isinstance(item.get("call_id"), str):
            raise _invalid(f"{where}.call_id", "a function_call_output item needs the call_id it answers")
        if isinstance(output, list):
            output = "".join(
                _part(p, "user", f"{where}.output[{i}]").get("text", "") for i, p in enumerate(output)
            )
        if not isinstance(output, str):
            raise _invalid(f"{where}.output", "a function_call_output's output is a string")
        return {"type": "function_call_output", "call_id": item["call_id"], "output": output}
    if kind == "reasoning":
        return {"type": "reasoning", "summary": item.get("summary") or []}  # kept, not sent (see messages_of)
    if kind == "item_reference":
        raise _unsupported(f"{where}.type", "item references are not served: send the item itself")
    raise _invalid(
        f"{where}.type",
        f"unknown item type {kind!r}: the gateway serves message, function_call, function_call_output and"
        " reasoning items",
    )


def _part(part: object, role: str, where: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise _invalid(where, "a content part is an object")
    kind = part.get("type")
    if kind not in _PART_TYPES[role]:
        allowed = ", ".join(sorted(_PART_TYPES[role]))
        raise _invalid(f"{where}.type", f"a {role} message takes {allowed} parts, not {kind!r}")
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _unsupported(f"{where}.file_id", "images are sent by image_url (a URL or a data URL)")
        return {"type": kind, "image_url": url, "detail": part.get("detail", "auto")}
    text = part.get("refusal") if kind == "refusal" else part.get("text")
    if not isinstance(text, str):
        raise _invalid(f"{where}.text", "a text part needs its text")
    return {"type": "output_text" if kind == "refusal" else kind, "text": text}


def messages_of(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as chat messages: a function call joins the assistant turn before it, its output is a
    tool message; reasoning items are not sent back (chat templates drop earlier turns' reasoning)."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            messages.append({"role": item["role"], "content": _chat_content(item["content"])})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if last["content"] == "":
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


def _chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(part["type"] != "input_image" for part in parts):
        return "".join(part["text"] for part in parts)  # plain text: what every chat template takes
    return [
        {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part["detail"]}}
        if part["type"] == "input_image"
        else {"type": "text", "text": part["text"]}
        for part in parts
    ]


def chat_body(
    checked: ResponsesRequest, history: list[dict[str, Any]], items: list[dict[str, Any]]
) -> dict[str, Any]:
    """The chat completion that serves the request: instructions as the system turn (an earlier response's
    are not carried over, as OpenAI does), the stored conversation, then this input."""
    messages = [{"role": "system", "content": checked.instructions}] if checked.instructions else []
    messages.extend(history)
    messages.extend(messages_of(items))
    if not messages:
        raise _invalid("input", "the input needs at least one message")
    body: dict[str, Any] = {"model": checked.model, "messages": messages}
    if checked.max_output_tokens is not None:
        body["max_completion_tokens"] = checked.max_output_tokens
    if checked.reasoning is not None and checked.reasoning.effort is not None:
        body["reasoning_effort"] = checked.reasoning.effort
    for field in ("temperature", "top_p", "parallel_tool_calls"):
        value = getattr(checked, field)
        if value is not None:
            body[field] = value
    user = checked.safety_identifier or checked.user
    if user is not None:
        body["user"] = user
    if checked.tools:
        body["tools"] = [_tool(tool, f"tools[{index}]") for index, tool in enumerate(checked.tools)]
    if checked.tool_choice is not None:
        body["tool_choice"] = _tool_choice(checked.tool_choice)
    if checked.text is not None and checked.text.format is not None:
        body["response_format"] = _response_format(checked.text.format)
    if checked.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = checked.top_logprobs or 0
    elif checked.top_logprobs:
        raise _invalid("top_logprobs", "top_logprobs needs include: ['message.output_text.logprobs']")
    body.update(_passed_through(checked))
    if checked.streaming:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


# fields of the Responses API the gateway keeps or reads itself: never sent on to the engine
_KEPT = frozenset(ResponsesRequest.model_fields) | frozenset(_UNSUPPORTED)


def _passed_through(checked: ResponsesRequest) -> dict[str, Any]:
    """Fields OpenAI's Responses API does not define (an engine's own sampling parameters, such as top_k):
    passed through to the engine untouched, as on chat completions."""
    return {key: value for key, value in (checked.model_extra or {}).items() if key not in _KEPT}


def _tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    kind = tool.get("type")
    if kind != "function":
        raise _unsupported(
            f"{where}.type",
            f"the built-in tool {kind!r} is not served; function tools are (your code runs them)",
        )
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where}.name", "a function tool needs a name")
    function: dict[str, Any] = {"name": name}
    for field in ("description", "parameters", "strict"):
        if tool.get(field) is not None:
            function[field] = tool[field]
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise _invalid("tool_choice", f"{choice!r} is not one of auto, none, required")
        return choice
    if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
        raise _unsupported(
            "tool_choice", "the only forced choice served is {'type': 'function', 'name': ...}"
        )
    return {"type": "function", "function": {"name": choice["name"]}}


def _response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _invalid("text.format.schema", "a json_schema format needs its schema, an object")
        json_schema: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": schema}
        for field in ("strict", "description"):
            if fmt.get(field) is not None:
                json_schema[field] = fmt[field]
        return {"type": "json_schema", "json_schema": json_schema}
    raise _invalid("text.format.type", f"{kind!r} is not one of text, json_object, json_schema")
