"""The items of the Responses API, as openai-python's `types/responses/` has them: what `output` holds
(`message` with `output_text`, `reasoning`, `function_call`) and what `input` may hold besides (messages,
`function_call_output`), and the function tools."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.http.openapi.schema import (
    Json,
    array,
    boolean,
    enum,
    nullable,
    obj,
    one_of,
    open_object,
    ref,
    string,
)

__all__ = ["ITEM_SCHEMAS"]

_ITEM_STATUS = enum(("in_progress", "completed", "incomplete"))


def _text_part(kind: str) -> Json:
    return obj({"type": enum((kind,)), "text": string()}, required=("type", "text"), extra=True)


_OUTPUT_TEXT = obj(
    {
        "type": enum(("output_text",)),
        "text": string(),
        "annotations": array(open_object()),
        "logprobs": array(open_object()),
    },
    required=("type", "text", "annotations"),
    extra=True,
)

_OUTPUT_MESSAGE = obj(
    {
        "id": string(),
        "type": enum(("message",)),
        "role": enum(("assistant",)),
        "status": _ITEM_STATUS,
        "content": array(one_of(ref("OutputText"), _text_part("refusal"))),
    },
    required=("id", "type", "role", "status", "content"),
    extra=True,
)

_REASONING_ITEM = obj(
    {
        "id": string(),
        "type": enum(("reasoning",)),
        "summary": array(_text_part("summary_text"), "The summary, when `reasoning.summary` asked for one."),
        "content": array(_text_part("reasoning_text"), "The reasoning text, where the engine gives it."),
        "status": _ITEM_STATUS,
    },
    required=("id", "type", "summary"),
    extra=True,
)

_FUNCTION_CALL = obj(
    {
        "id": string(),
        "type": enum(("function_call",)),
        "call_id": string(),
        "name": string(),
        "arguments": string("The arguments as JSON text."),
        "status": _ITEM_STATUS,
    },
    required=("type", "call_id", "name", "arguments"),
    extra=True,
)

_INPUT_MESSAGE = obj(
    {
        "type": enum(("message",)),
        "role": enum(("user", "assistant", "system", "developer")),
        "content": one_of(
            string(),
            array(one_of(_text_part("input_text"), _text_part("output_text"), open_object())),
        ),
        "id": string(),
        "status": _ITEM_STATUS,
    },
    required=("role", "content"),
    extra=True,
)

_FUNCTION_CALL_OUTPUT = obj(
    {
        "type": enum(("function_call_output",)),
        "call_id": string(),
        "output": one_of(string(), array(open_object())),
        "id": string(),
        "status": _ITEM_STATUS,
    },
    required=("type", "call_id", "output"),
    extra=True,
)

ITEM_SCHEMAS: Mapping[str, Json] = {
    "ResponseOutputItem": one_of(ref("OutputMessage"), ref("ReasoningItem"), ref("FunctionCall")),
    "ResponseInputItem": one_of(
        ref("InputMessage"),
        ref("OutputMessage"),
        ref("ReasoningItem"),
        ref("FunctionCall"),
        ref("FunctionCallOutput"),
    ),
    "InputMessage": _INPUT_MESSAGE,
    "OutputMessage": _OUTPUT_MESSAGE,
    "OutputText": _OUTPUT_TEXT,
    "ReasoningItem": _REASONING_ITEM,
    "FunctionCall": _FUNCTION_CALL,
    "FunctionCallOutput": _FUNCTION_CALL_OUTPUT,
    "FunctionTool": obj(
        {
            "type": enum(("function",)),
            "name": string(),
            "description": nullable(string()),
            "parameters": nullable(open_object("A JSON Schema of the arguments.")),
            "strict": nullable(boolean()),
        },
        required=("type", "name"),
        extra=True,
    ),
}
