"""The hand-written entries of the two inference routes, `POST /v1/chat/completions` and
`POST /v1/completions`: plain Starlette routes (the fast path, gateway/routes.py) that check their bodies
themselves (gateway/http/schemas.py), so FastAPI cannot describe them. What is written here is what they take
and answer: OpenAI's fields, and tiergate's (the tier suffixes, `x-tiergate-tier`, `x-tiergate-depth`,
`usage.cost`, `usage.reasoning_depth`). Fields not named pass through to the engine untouched."""

from __future__ import annotations

from collections.abc import Mapping

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
from gateway.http.openapi.statuses import KEY_401, error_responses, retry_headers
from gateway.http.openapi.usage import EFFORTS
from gateway.http.schemas import MAX_OUTPUT_TOKENS

__all__ = [
    "INFERENCE_ERRORS",
    "INFERENCE_PATHS",
    "INFERENCE_SCHEMAS",
    "MODEL",
    "TIER_PARAMETERS",
    "chunk_stream",
    "inference_ok",
    "inference_operation",
]

MODEL = string(
    "A model id from `GET /v1/models`, with its tier as a suffix: `qwen3-8b:fast`, `qwen3-8b:deliberate`,"
    " `qwen3-8b:auto` (the gateway picks the tier by the request's difficulty). The bare `qwen3-8b` takes the"
    " tier from the `x-tiergate-tier` header, else from `reasoning_effort`, else the model's default tier"
    " (docs/tiers.md).",
    minLength=1,
    examples=["qwen3-8b:deliberate"],
)
REASONING_EFFORT = nullable(
    enum(
        EFFORTS,
        "Picks the tier when neither the suffix nor the header did (none/minimal/low: fast;"
        " medium/high/xhigh: deliberate, by default), and on the deliberate tier the depth level: floor, cap,"
        " samples. Passed to the engine too.",
    )
)
_OUTPUT_TOKENS = integer(minimum=1, maximum=MAX_OUTPUT_TOKENS)

TIER_PARAMETERS: tuple[Json, ...] = (
    {
        "name": "x-tiergate-tier",
        "in": "header",
        "required": False,
        "description": "The tier, for a bare model id (a suffix wins): `fast`, `deliberate` or `auto`."
        " Another value is a 400 `invalid_tier`; a tier the model is not offered in, 400 `tier_not_offered`.",
        "schema": enum(("fast", "deliberate", "auto")),
    },
    {
        "name": "x-tiergate-depth",
        "in": "header",
        "required": False,
        "description": "`best-effort`: a deliberate request whose output bound is below its depth floor is"
        " served within its bound (billed at the fast tier's prices) instead of refused with a 400"
        " `max_tokens_below_depth_floor`.",
        "schema": enum(("best-effort",)),
    },
    {
        "name": "x-request-id",
        "in": "header",
        "required": False,
        "description": "The client's own request id, echoed back in `x-request-id` when it is 1 to 128"
        " visible ASCII characters (else the gateway's own is); the gateway's is always"
        " `x-tiergate-request-id`.",
        "schema": string(),
    },
)

_COMMON_FIELDS: Mapping[str, Json] = {
    "model": MODEL,
    "stream": nullable(boolean("Answer as server-sent events (`text/event-stream`).")),
    "stream_options": nullable(
        obj(
            {"include_usage": nullable(boolean("A last chunk with `usage` (and its cost) before `[DONE]`."))},
            extra=True,
        )
    ),
    "max_tokens": nullable(
        integer("The bound on each choice's output.", minimum=1, maximum=MAX_OUTPUT_TOKENS)
    ),
    "n": nullable(integer("Choices to generate.", minimum=1, maximum=128)),
    "temperature": nullable(number(minimum=0, maximum=2)),
    "top_p": nullable(number(minimum=0, maximum=1)),
    "presence_penalty": nullable(number(minimum=-2, maximum=2)),
    "frequency_penalty": nullable(number(minimum=-2, maximum=2)),
    "seed": nullable(integer()),
    "stop": nullable(one_of(string(), array(string()))),
    "user": nullable(string()),
    "reasoning_effort": REASONING_EFFORT,
}

_CHAT_REQUEST = obj(
    {
        **_COMMON_FIELDS,
        "messages": array(ref("ChatMessage"), minItems=1),
        "max_completion_tokens": nullable(
            {
                **_OUTPUT_TOKENS,
                "description": "The bound on each choice's output (wins over `max_tokens`). On the deliberate"
                " tier it bounds everything a sample generates, reasoning included; below the depth floor"
                " plus room for an answer it is a 400 `max_tokens_below_depth_floor`.",
            }
        ),
        "logprobs": nullable(boolean()),
        "top_logprobs": nullable(integer(minimum=0, maximum=20)),
        "tools": array(open_object("A function tool: `{type: function, function: {name, parameters}}`.")),
        "tool_choice": one_of(enum(("none", "auto", "required")), open_object()),
        "parallel_tool_calls": boolean(),
        "response_format": open_object("`{type: json_object}` or `{type: json_schema, json_schema: {...}}`."),
        "logit_bias": open_object(),
        "metadata": open_object(),
    },
    required=("model", "messages"),
    extra=True,
    description="OpenAI's chat completions request. Other fields pass through to the engine (vLLM's"
    " `chat_template_kwargs`, ...); on the deliberate tier a parameter it cannot honour is a 400"
    " `unsupported_parameter` (docs/deliberation.md).",
)

_COMPLETION_REQUEST = obj(
    {
        **_COMMON_FIELDS,
        "prompt": one_of(string(), array(string()), array(integer()), array(array(integer()))),
        "max_tokens": nullable(integer("The bound on each choice's output; default 16.", minimum=1)),
        "echo": nullable(boolean()),
        "logprobs": nullable(integer(minimum=0, maximum=20)),
        "best_of": nullable(integer(minimum=1, maximum=128)),
        "suffix": nullable(string()),
    },
    required=("model", "prompt"),
    extra=True,
    description="OpenAI's (legacy) completions request. `max_completion_tokens` is a 400 `unknown_parameter`"
    " here (a chat field the engines ignore on this endpoint).",
)

_TOOL_CALLS = array(open_object("`{id, type: function, function: {name, arguments}}`."))
_TIERGATE_PROGRESS = open_object(
    "tiergate's progress of a deliberation of several samples: `{progress: {samples, answered, extensions,"
    " votes}}`, or `{winner: {sample, reasoning}}` (docs/deliberation.md#streaming)."
)
_CHOICE_END = {
    "index": integer(),
    "finish_reason": nullable(string(examples=["stop", "length", "tool_calls"])),
    "logprobs": nullable(open_object()),
}

_CHAT_COMPLETION = obj(
    {
        "id": string("`chatcmpl-` and the gateway's request id.", examples=["chatcmpl-req_abc"]),
        "object": enum(("chat.completion",)),
        "created": integer(),
        "model": string("The tiered id that served it: `qwen3-8b:fast`."),
        "choices": array(
            obj(
                {
                    **_CHOICE_END,
                    "message": obj(
                        {
                            "role": enum(("assistant",)),
                            "content": nullable(string()),
                            "reasoning": nullable(string("The reasoning text, where the model gives one.")),
                            "tool_calls": _TOOL_CALLS,
                        },
                        extra=True,
                    ),
                },
                required=("index", "message", "finish_reason"),
                extra=True,
            )
        ),
        "usage": ref("Usage"),
    },
    required=("id", "object", "created", "model", "choices"),
    extra=True,
)

_CHAT_CHUNK = obj(
    {
        "id": string(),
        "object": enum(("chat.completion.chunk",)),
        "created": integer(),
        "model": string(),
        "choices": array(
            obj(
                {
                    **_CHOICE_END,
                    "delta": obj(
                        {
                            "role": enum(("assistant",)),
                            "content": nullable(string()),
                            "reasoning": nullable(string()),
                            "tool_calls": _TOOL_CALLS,
                        },
                        extra=True,
                    ),
                },
                extra=True,
            )
        ),
        "usage": nullable(ref("Usage")),
        "tiergate": _TIERGATE_PROGRESS,
    },
    required=("id", "object", "created", "model", "choices"),
    extra=True,
)

_COMPLETION = obj(
    {
        "id": string("`cmpl-` and the gateway's request id."),
        "object": enum(("text_completion",)),
        "created": integer(),
        "model": string("The tiered id that served it."),
        "choices": array(obj({**_CHOICE_END, "text": string()}, required=("index", "text"), extra=True)),
        "usage": nullable(ref("Usage")),
    },
    required=("id", "object", "created", "model", "choices"),
    extra=True,
    description="A completion; a stream sends one per event, the same shape.",
)

INFERENCE_SCHEMAS: Mapping[str, Json] = {
    "ChatMessage": obj(
        {
            "role": enum(("system", "developer", "user", "assistant", "tool", "function")),
            "content": nullable(
                one_of(string(), array(open_object("A content part: `{type: text, text}`...")))
            ),
            "name": string(),
            "tool_calls": _TOOL_CALLS,
            "tool_call_id": string(),
        },
        required=("role",),
        extra=True,
    ),
    "ChatCompletionRequest": _CHAT_REQUEST,
    "CompletionRequest": _COMPLETION_REQUEST,
    "ChatCompletion": _CHAT_COMPLETION,
    "ChatCompletionChunk": _CHAT_CHUNK,
    "Completion": _COMPLETION,
}

INFERENCE_ERRORS: Mapping[int, str] = {
    400: "The body is not a JSON object (`invalid_json`); a parameter is missing or wrong"
    " (`missing_required_parameter`, `invalid_type`, `invalid_value`, `unknown_parameter`; `param` names it);"
    " a tier suffix or header that is no tier (`invalid_tier`) or not offered (`tier_not_offered`); on the"
    " deliberate tier a parameter it cannot honour (`unsupported_parameter`) or a bound below the depth floor"
    " (`max_tokens_below_depth_floor`); the engine refused it (`context_length_exceeded`,"
    " `invalid_request`).",
    401: KEY_401,
    403: "The key may not use this tier (`tier_not_allowed`) or model (`model_not_allowed`).",
    404: "Unknown model, or a tier it is not offered in (`model_not_found`).",
    413: "The body exceeds `server.max_body_bytes`, or the engine refused its size (`request_too_large`).",
    429: "The key's RPM or TPM limit in this tier (`rate_limit_exceeded`; `x-ratelimit-*`, `retry-after`),"
    " the key's `max_concurrent` requests in flight already (`concurrency_limit_exceeded`; `retry-after`),"
    " or a budget with no room for the request's worst-case cost (`insufficient_quota`);"
    " `x-should-retry: false` when waiting cannot help.",
    502: "No replica could be reached (`engine_unreachable`) or the engine failed (`engine_error`).",
    503: "The gateway is at its concurrency limit or short of resources (`gateway_overloaded`); the engines"
    " are overloaded (`engine_overloaded`) or none is healthy (`no_healthy_replica`); rate limits, budgets or"
    " keys cannot be checked (`limiter_unavailable`, `budget_unavailable`, `key_store_unavailable`).",
    504: "The engine timed out (`engine_timeout`).",
}


def chunk_stream(chunk_schema: str) -> str:
    """What a chat or completions stream sends."""
    return (
        f"With `stream: true`: events `data: <{chunk_schema}>`, the last one with `usage` when"
        " `stream_options.include_usage` asked for it, then `data: [DONE]`. An engine failure after the first"
        " event is one `data: <ErrorResponse>` event and the end of the stream (no `[DONE]`); SSE comments"
        " keep a long deliberation's connection up."
    )


def inference_ok(json_schema: str, stream: str, description: str) -> Json:
    """A 200 that is JSON, or server-sent events (`stream` says which) when the request streams."""
    return {
        "description": description,
        "headers": {
            "x-tiergate-tier": {
                "description": "The tier that served it.",
                "schema": enum(("fast", "deliberate")),
            },
            "x-tiergate-auto": {
                "description": "With the auto tier, why it chose: `score=0.85; reasons=math,multi_step`.",
                "schema": string(),
            },
            "x-tiergate-request-id": {"description": "The gateway's request id.", "schema": string()},
            "x-request-id": {
                "description": "The client's id if it sent one, else the gateway's.",
                "schema": string(),
            },
            "x-ratelimit-remaining-requests": {
                "description": "With a rate-limited key: what is left of its RPM (and `x-ratelimit-limit-*`,"
                " `x-ratelimit-reset-*`, `-tokens`).",
                "schema": integer(),
            },
        },
        "content": {
            "application/json": {"schema": ref(json_schema)},
            "text/event-stream": {"schema": string(stream)},
        },
    }


def inference_operation(
    operation_id: str, summary: str, request: str, ok: Json, errors: Mapping[int, str] = INFERENCE_ERRORS
) -> Json:
    """An inference operation: the tier headers, a JSON body, its 200 and the errors of the inference path."""
    responses = error_responses(errors)
    responses["429"]["headers"] = {
        **retry_headers(),
        "x-should-retry": {"description": "`false`: waiting cannot help.", "schema": string()},
    }
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["inference"],
        "parameters": list(TIER_PARAMETERS),
        "requestBody": {"required": True, "content": {"application/json": {"schema": ref(request)}}},
        "responses": {"200": ok, **responses},
    }


INFERENCE_PATHS: Mapping[str, Json] = {
    "/v1/chat/completions": {
        "post": inference_operation(
            "createChatCompletion",
            "Chat completion, on the fast or the deliberate tier",
            "ChatCompletionRequest",
            inference_ok(
                "ChatCompletion",
                chunk_stream("ChatCompletionChunk"),
                "The completion, with its cost and depth.",
            ),
        )
    },
    "/v1/completions": {
        "post": inference_operation(
            "createCompletion",
            "Text completion (the tier's engine answers it directly: no deliberation)",
            "CompletionRequest",
            inference_ok("Completion", chunk_stream("Completion"), "The completion, with its cost."),
        )
    },
}
