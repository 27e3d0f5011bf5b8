"""The one request the benchmark sends, and the check that a target really answers it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import httpx

MODEL = "qwen3-8b"
CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"  # tiergate's Responses API: the same request, in its shape
# Roughly ten words: small enough that the gateway's own work, not payload size, dominates.
PROMPT = "Explain in one short sentence why the sky looks blue today."
MAX_TOKENS = 16


class Mode(StrEnum):
    NON_STREAM = "non-stream"
    STREAM = "stream"


def path(responses: bool) -> str:
    return RESPONSES_PATH if responses else CHAT_PATH


def request_body(
    mode: Mode, *, responses: bool = False, max_tokens: int = MAX_TOKENS, model: str = MODEL
) -> str:
    if responses:  # stored, as OpenAI's default (`store: true`): the row written is part of its cost
        shape: dict[str, Any] = {"model": MODEL, "input": PROMPT, "max_output_tokens": MAX_TOKENS}
        if mode is Mode.STREAM:
            shape["stream"] = True
        return json.dumps(shape, separators=(",", ":"))
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
    }
    if mode is Mode.STREAM:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":"))


def body_markers(mode: Mode, *, responses: bool = False) -> list[str]:
    """Substrings every 2xx body must contain during the load run (cheap check done inside wrk)."""
    if responses:
        # the bench's 16 tokens stop the answer: the stream ends in response.incomplete, with usage
        return ['"usage":{"input_tokens"'] if mode is Mode.STREAM else ['"output"']
    if mode is Mode.STREAM:
        return ['"choices"', "data: [DONE]"]
    return ['"choices"']


def verify(
    base_url: str,
    headers: Mapping[str, str],
    mode: Mode,
    timeout_s: float = 30.0,
    *,
    required_headers: Sequence[str] = (),
    responses: bool = False,
    max_tokens: int = MAX_TOKENS,
) -> str | None:
    """Send one request; None if it fully succeeded, otherwise why not.

    This runs before any load so that a target answering errors quickly can never be reported as
    fast: the full response is parsed, which the in-wrk marker check does not do. A 200 must also
    carry every header in required_headers (e.g. the rate-limit headers that prove limits are on).
    """
    try:
        resp = httpx.post(
            base_url + path(responses),
            content=request_body(mode, responses=responses, max_tokens=max_tokens),
            headers={"Content-Type": "application/json", **headers},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        return f"request failed: {exc!r}"
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}: {resp.text[:300]}"
    missing = [name for name in required_headers if name not in resp.headers]
    if missing:
        return f"response lacks header(s) {', '.join(missing)}"
    try:
        if responses:
            return _check_responses(resp.text, mode)
        return _check_stream(resp.text) if mode is Mode.STREAM else _check_json(resp.text)
    except (ValueError, TypeError, KeyError) as exc:
        return f"malformed body ({exc}): {resp.text[:300]}"


def refuses_anonymous(base_url: str) -> str | None:
    """None when a request without a key gets 401, else what it got: auth is really on."""
    try:
        resp = httpx.post(
            base_url + CHAT_PATH,
            content=request_body(Mode.NON_STREAM),
            headers={"Content-Type": "application/json"},
            timeout=30.0,
        )
    except httpx.HTTPError as exc:
        return f"request without a key failed: {exc!r}"
    if resp.status_code != 401:
        return f"a request without a key got HTTP {resp.status_code}, not 401: auth is not enforced"
    return None


def _check_json(text: str) -> str | None:
    data = json.loads(text)
    if not data.get("choices"):
        return f"no choices in body: {text[:300]}"
    if data["choices"][0]["message"].get("content") is None:
        return "first choice has no message content"
    return None


def _check_stream(text: str) -> str | None:
    """Expect OpenAI SSE: content chunks, a usage chunk (include_usage), then [DONE]."""
    payloads = [line[len("data:") :].strip() for line in text.splitlines() if line.startswith("data:")]
    if not payloads or payloads[-1] != "[DONE]":
        return f"stream does not end with [DONE]: {text[-300:]}"
    chunks = [json.loads(p) for p in payloads[:-1]]
    if not any(chunk.get("choices") for chunk in chunks):
        return "no chunk carries choices"
    if not any(chunk.get("usage") for chunk in chunks):
        return "no usage chunk although stream_options.include_usage was set"
    return None


def _check_responses(text: str, mode: Mode) -> str | None:
    """A response object with its answer and usage; streamed, ending in response.completed (or .incomplete:
    max_output_tokens stopped it)."""
    if mode is Mode.STREAM:
        payloads = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
        if not payloads or payloads[-1].get("type") not in ("response.completed", "response.incomplete"):
            return f"stream does not end with response.completed: {text[-300:]}"
        data = payloads[-1]["response"]
    else:
        data = json.loads(text)
    messages = [item for item in data.get("output", ()) if item.get("type") == "message"]
    if not messages or not messages[0]["content"][0].get("text"):
        return f"no answer in the response: {text[:300]}"
    if not data.get("usage"):
        return "the response has no usage"
    return None
