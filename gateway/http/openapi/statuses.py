"""The statuses the gateway answers, as OpenAPI responses: every failure is an OpenAI error envelope
(docs/errors.md), never a 422 (the app's handlers turn a validation error into a 400,
gateway/http/errors.py)."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.http.openapi.schema import Json, nullable, obj, ref, string

__all__ = [
    "ERROR_SCHEMAS",
    "KEY_401",
    "KEY_STORE_503",
    "SERVER_500",
    "error_response",
    "error_responses",
    "retry_headers",
]

ERROR_SCHEMAS: Mapping[str, Json] = {
    "ErrorResponse": obj(
        {
            "error": obj(
                {
                    "message": string("What went wrong, for a person."),
                    "type": string(
                        "OpenAI's error type: `invalid_request_error`, `authentication_error`,"
                        " `permission_error`, `rate_limit_error`, `insufficient_quota`, `server_error`."
                    ),
                    "param": nullable(string("The parameter at fault, when one is (`messages[0].role`).")),
                    "code": nullable(
                        string(
                            "A string code (docs/errors.md lists each): `invalid_value`, `model_not_found`..."
                        )
                    ),
                },
                required=("message", "type", "param", "code"),
            )
        },
        required=("error",),
        description="OpenAI's error envelope; every failure the gateway answers is one (docs/errors.md).",
    )
}


def retry_headers() -> Json:
    return {
        "retry-after": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
        "retry-after-ms": {
            "description": "Milliseconds to wait before retrying (where the gateway knows them).",
            "schema": {"type": "integer"},
        },
    }


def error_response(description: str, *, retry: bool = False) -> Json:
    """An error status: its description says when, and which codes."""
    response: Json = {
        "description": description,
        "content": {"application/json": {"schema": ref("ErrorResponse")}},
    }
    if retry:
        response["headers"] = retry_headers()
    return response


def error_responses(errors: Mapping[int, str]) -> dict[str, Json]:
    """Responses for these error statuses (a 5xx with `retry-after`, except a 500), and the 500 every route
    may answer."""
    responses = {str(status): error_response(text, retry=status > 500) for status, text in errors.items()}
    responses.setdefault("500", error_response(SERVER_500))
    return dict(sorted(responses.items()))


# The texts that many routes share
KEY_401 = (
    "No API key, or a malformed, unknown, revoked or expired one (`invalid_api_key`). Only where"
    " `auth.mode` is `keys`."
)
KEY_STORE_503 = (
    "The key store cannot be reached and the key is not cached (`key_store_unavailable`); `retry-after`."
)
SERVER_500 = (
    "A fault of the gateway's own (`internal_error`, logged with its traceback); the connection is closed."
)
