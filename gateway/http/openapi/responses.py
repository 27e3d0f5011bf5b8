"""The hand-written entries of the Responses API (`/v1/responses`), in OpenAI's wire format (openai-python's
`types/responses/`): the routes only have to be registered, as plain Starlette routes or FastAPI routes
(a hand-written entry replaces what FastAPI would generate for the same path and method)."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.http.openapi.inference import (
    INFERENCE_ERRORS,
    MODEL,
    inference_ok,
    inference_operation,
)
from gateway.http.openapi.schema import (
    Json,
    array,
    boolean,
    enum,
    integer,
    nullable,
    number,
    obj,
    one_of,
    open_object,
    ref,
    string,
)
from gateway.http.openapi.statuses import KEY_401, KEY_STORE_503, error_responses
from gateway.http.openapi.usage import EFFORTS
from gateway.http.schemas import MAX_OUTPUT_TOKENS

__all__ = ["RESPONSES_PATHS", "RESPONSES_SCHEMAS"]

_STREAM_EVENTS = (
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.reasoning_summary_part.added",
    "response.reasoning_summary_text.delta",
    "response.reasoning_summary_text.done",
    "response.reasoning_summary_part.done",
    "response.reasoning_text.delta",
    "response.reasoning_text.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
)


_REASONING = obj(
    {
        "effort": nullable(
            enum(
                EFFORTS,
                "As chat's `reasoning_effort`: picks the tier (without a suffix) and the depth level.",
            )
        ),
        "summary": nullable(
            enum(("auto", "concise", "detailed"), "A summary of the reasoning in the output.")
        ),
    },
)

_REQUEST = obj(
    {
        "model": MODEL,
        "input": one_of(
            string("A user message's text."),
            array(ref("ResponseInputItem")),
            description="The input: a string, or a list of items (messages, earlier output items,"
            " `function_call_output`). Another item type is a 400.",
        ),
        "instructions": nullable(string("A system (developer) message put before the input.")),
        "max_output_tokens": nullable(
            integer(
                "The bound on the output, reasoning included; on the deliberate tier as chat's"
                " `max_completion_tokens` (below the depth floor: 400 `max_tokens_below_depth_floor`).",
                minimum=1,
                maximum=MAX_OUTPUT_TOKENS,
            )
        ),
        "reasoning": nullable(_REASONING),
        "tools": array(
            ref("FunctionTool"), "Function tools only: a built-in tool (`web_search`...) is a 400."
        ),
        "tool_choice": one_of(
            enum(("none", "auto", "required")),
            obj({"type": enum(("function",)), "name": string()}, required=("type", "name")),
        ),
        "parallel_tool_calls": nullable(boolean()),
        "text": obj(
            {
                "format": one_of(
                    obj({"type": enum(("text", "json_object"))}, required=("type",)),
                    obj(
                        {
                            "type": enum(("json_schema",)),
                            "name": string(),
                            "schema": open_object("The JSON Schema the answer follows."),
                            "strict": nullable(boolean()),
                            "description": string(),
                        },
                        required=("type", "name", "schema"),
                    ),
                ),
            },
            extra=True,
        ),
        "temperature": nullable(number(minimum=0, maximum=2)),
        "top_p": nullable(number(minimum=0, maximum=1)),
        "metadata": nullable(
            obj({}, extra=True, description="Up to 16 string pairs, kept with the response.")
        ),
        "user": string(),
        "store": nullable(
            boolean(
                "Keep the response (default true, as OpenAI) for retrieval, `input_items` and"
                " `previous_response_id`; it is the tenant's data, deleted by DELETE or after the retention."
            )
        ),
        "previous_response_id": nullable(
            string("Continue a stored response's conversation; unknown or another tenant's: 404.")
        ),
        "stream": nullable(boolean("Answer as server-sent events of the typed `ResponseStreamEvent`s.")),
    },
    required=("model", "input"),
    extra=True,
    description="OpenAI's Responses request. What the gateway does not support (`background`, built-in tools,"
    " encrypted reasoning, ...) is a 400 naming the parameter.",
)

_RESPONSE = obj(
    {
        "id": string(examples=["resp_abc"]),
        "object": enum(("response",)),
        "created_at": number(),
        "completed_at": nullable(number()),
        "status": enum(("completed", "failed", "in_progress", "cancelled", "queued", "incomplete")),
        "error": nullable(obj({"code": string(), "message": string()}, required=("code", "message"))),
        "incomplete_details": nullable(
            obj({"reason": enum(("max_output_tokens", "content_filter"))}, extra=True)
        ),
        "instructions": nullable(string()),
        "max_output_tokens": nullable(integer()),
        "metadata": nullable(obj({}, extra=True)),
        "model": string("The tiered id that served it: `qwen3-8b:deliberate`."),
        "output": array(ref("ResponseOutputItem")),
        "parallel_tool_calls": boolean(),
        "previous_response_id": nullable(string()),
        "reasoning": nullable(_REASONING),
        "store": boolean(),
        "temperature": nullable(number()),
        "text": open_object(),
        "tool_choice": one_of(string(), open_object()),
        "tools": array(ref("FunctionTool")),
        "top_p": nullable(number()),
        "truncation": nullable(string()),
        "usage": nullable(ref("ResponseUsage")),
        "user": nullable(string()),
    },
    required=(
        "id",
        "object",
        "created_at",
        "status",
        "model",
        "output",
        "parallel_tool_calls",
        "tool_choice",
        "tools",
    ),
    extra=True,
)

_STREAM_EVENT = obj(
    {
        "type": enum(_STREAM_EVENTS),
        "sequence_number": integer("0, 1, 2... over the stream."),
        "response": ref(
            "Response", "`response.created`, `.in_progress`, `.completed` (with usage), `.failed`."
        ),
        "item": ref("ResponseOutputItem", "`response.output_item.added` / `.done`."),
        "output_index": integer(),
        "content_index": integer(),
        "summary_index": integer(),
        "item_id": string(),
        "part": open_object("`response.content_part.*`, `response.reasoning_summary_part.*`."),
        "delta": string("The text or arguments added (the `.delta` events)."),
        "text": string("The whole text (the `.done` events)."),
        "arguments": string("The whole arguments (`response.function_call_arguments.done`)."),
        "code": nullable(string("`error`: the error's code.")),
        "message": string("`error`: the error's message."),
        "param": nullable(string()),
    },
    required=("type", "sequence_number"),
    extra=True,
    description="One server-sent event of a streamed response (`event: <type>`, `data: <this>`), as the SDK's"
    " `responses.stream()` parses it.",
)

RESPONSES_SCHEMAS: Mapping[str, Json] = {
    "ResponseCreateRequest": _REQUEST,
    "Response": _RESPONSE,
    "ResponseStreamEvent": _STREAM_EVENT,
    "ResponseDeleted": obj(
        {"id": string(), "object": enum(("response.deleted",)), "deleted": boolean()},
        required=("id", "object", "deleted"),
    ),
    "ResponseInputItemList": obj(
        {
            "object": enum(("list",)),
            "data": array(ref("ResponseInputItem")),
            "first_id": nullable(string()),
            "last_id": nullable(string()),
            "has_more": boolean(),
        },
        required=("object", "data", "has_more"),
    ),
}

_CREATE_ERRORS: Mapping[int, str] = {
    **INFERENCE_ERRORS,
    400: INFERENCE_ERRORS[400] + " Also an unknown input item type, and what the gateway does not support"
    " (`background`, built-in tools, encrypted reasoning): `param` names it.",
    404: INFERENCE_ERRORS[404] + " An unknown, deleted, expired or another tenant's `previous_response_id`"
    " (`response_not_found`).",
}
_STORED_404 = (
    "No such stored response for this tenant (`response_not_found`): unknown, another tenant's, deleted, past"
    " the retention, or created with `store: false`."
)
_STORED_ERRORS: Mapping[int, str] = {
    401: KEY_401,
    404: _STORED_404,
    503: "The database cannot be reached (`database_unavailable`); " + KEY_STORE_503,
}
_RESPONSE_ID = {
    "name": "response_id",
    "in": "path",
    "required": True,
    "schema": string(examples=["resp_abc"]),
}


def _stored(operation_id: str, summary: str, ok: Json, errors: Mapping[int, str] = _STORED_ERRORS) -> Json:
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["responses"],
        "parameters": [_RESPONSE_ID],
        "responses": {"200": ok, **error_responses(errors)},
    }


def _json_ok(description: str, schema: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


_LIST = _stored(
    "listResponseInputItems",
    "The input items of a stored response",
    _json_ok("The items, a page of them.", "ResponseInputItemList"),
    {**_STORED_ERRORS, 400: "A query parameter out of range (`invalid_value`; `param` names it)."},
)
_LIST["parameters"] = [
    _RESPONSE_ID,
    {"name": "after", "in": "query", "required": False, "schema": string("The item id to list after.")},
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": integer(minimum=1, maximum=100, default=20),
    },
    {
        "name": "order",
        "in": "query",
        "required": False,
        "schema": {**enum(("asc", "desc")), "default": "desc"},
    },
]
_EVENTS = (
    "With `stream: true`: typed events, `event: <type>` and `data: <ResponseStreamEvent>`, numbered by"
    " `sequence_number`: `response.created`, `response.in_progress`, then per output item"
    " `response.output_item.added`, its parts and deltas (reasoning, `response.output_text.delta`,"
    " `response.function_call_arguments.delta`) and their `.done` events, and last `response.completed` (its"
    " `response.usage` with cost and depth) or `response.incomplete`. An engine failure after the first event"
    " is `response.failed` or an `error` event, and the end of the stream. No `[DONE]`, as OpenAI."
)
_CREATE = inference_operation(
    "createResponse",
    "Create a response (OpenAI's Responses API), on the fast or the deliberate tier",
    "ResponseCreateRequest",
    inference_ok("Response", _EVENTS, "The response, with its cost and depth in `usage`."),
    _CREATE_ERRORS,
)
_CREATE["tags"] = ["responses"]

RESPONSES_PATHS: Mapping[str, Json] = {
    "/v1/responses": {"post": _CREATE},
    "/v1/responses/{response_id}": {
        "get": _stored("getResponse", "A stored response", _json_ok("The stored response.", "Response")),
        "delete": _stored(
            "deleteResponse",
            "Delete a stored response (its text is gone at once)",
            _json_ok("Deleted.", "ResponseDeleted"),
        ),
    },
    "/v1/responses/{response_id}/input_items": {"get": _LIST},
}
