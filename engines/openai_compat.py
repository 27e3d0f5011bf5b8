"""Adapter for engines that speak OpenAI's HTTP API: vLLM first, also SGLang and trtllm-serve."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from engines._exceptions import (
    EngineError,
    EngineFailed,
    EngineOverloaded,
    EngineRejected,
    EngineTimeout,
    EngineUnavailable,
    LocalOverload,
)
from engines.client import TEMPLATE_FIELDS, EngineReply, Headers, Timeouts
from engines.http import EngineHTTP
from engines.openai_stream import OpenAICompatStream, local_shortage
from engines.usage import Usage

__all__ = ["OpenAICompatEngine", "translate_error"]

# how engines word a prompt that does not fit: vLLM ("maximum context length", "context length"),
# TensorRT-LLM's TensorRT and PyTorch backends ("should not exceed max_seq_len (N)", "max_num_tokens")
_TOO_LONG = re.compile(
    r"context length|should not exceed max_(?:seq_len|num_tokens)"
    r"|exceeds? (?:the )?max(?:imum)?[ _](?:input|seq)",
    re.I,
)


class OpenAICompatEngine:
    """One replica. Holds no connection of its own: requests go through the shared `EngineHTTP`."""

    metrics_path = "/metrics"  # where the engine serves Prometheus text

    def __init__(
        self, base_url: str, http: EngineHTTP, timeouts: Timeouts, *, api_key: str | None = None
    ) -> None:
        self.url = base_url.rstrip("/")
        self._http = http
        self._timeouts = timeouts
        self._base_headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
        if api_key:
            self._base_headers.append((b"authorization", b"Bearer " + api_key.encode()))
        self._urls: dict[str, httpx.URL] = {}  # parsed once per path: URL parsing is not free
        # waiting for a connection of our own pool counts as connecting (a shortage of ours, not the engine's)
        connect = {"connect": timeouts.connect_s, "pool": timeouts.connect_s}
        self._complete_ext = {"timeout": {**connect, "read": timeouts.total_s}}
        self._stream_ext = {"timeout": {**connect, "read": None}}

    async def complete(
        self, path: str, payload: bytes, *, request_id: str, headers: Headers = ()
    ) -> EngineReply:
        request = self._request(path, payload, request_id, self._complete_ext, b"application/json", headers)
        try:
            async with asyncio.timeout(self._timeouts.total_s):
                response = await self._http.transport.handle_async_request(request)
                body = await response.aread()
        except TimeoutError:
            raise EngineTimeout(
                "the engine did not answer in time", replica=self.url, phase="total"
            ) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc, "total") from exc
        if response.status_code != 200:
            raise translate_error(response.status_code, body, response.headers, self.url)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise EngineFailed("the engine answered with invalid JSON", replica=self.url) from None
        if not isinstance(data, dict):
            raise EngineFailed("the engine answered with a non-object JSON body", replica=self.url)
        return EngineReply(data, Usage.from_payload(data.get("usage")), self.url)

    async def stream(
        self, path: str, payload: bytes, *, request_id: str, headers: Headers = ()
    ) -> OpenAICompatStream:
        """Open a stream and wait for its first event, so that a failure before it can fail over."""
        request = self._request(path, payload, request_id, self._stream_ext, b"text/event-stream", headers)
        stream: OpenAICompatStream | None = None
        try:
            async with asyncio.timeout(self._timeouts.first_token_s):
                response = await self._http.transport.handle_async_request(request)
                if response.status_code != 200:
                    body = await response.aread()
                    raise translate_error(response.status_code, body, response.headers, self.url)
                stream = OpenAICompatStream(self.url, response, self._timeouts.idle_s)
                await stream.prime()
        except TimeoutError:
            await _close(stream)
            raise EngineTimeout("no first token in time", replica=self.url, phase="first_token") from None
        except httpx.TransportError as exc:
            await _close(stream)
            raise self._transport_error(exc, "first_token") from exc
        except BaseException:
            await _close(stream)
            raise
        return stream

    async def health(self) -> bool:
        try:
            response = await self._http.client.get(self.url + "/health", timeout=self._timeouts.connect_s)
        except httpx.TransportError as exc:
            if local_shortage(exc):
                raise LocalOverload(f"could not check the engine: {exc}", replica=self.url) from exc
            return False
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def metrics_text(self) -> str | None:
        try:
            response = await self._http.client.get(
                self.url + self.metrics_path, timeout=self._timeouts.connect_s
            )
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None  # httpx decodes with errors="replace"

    async def count_tokens(
        self,
        model: str,
        *,
        prompt: str | None = None,
        messages: Any = None,
        template: Mapping[str, Any] | None = None,
    ) -> int | None:
        body: dict[str, Any] = {"model": model}
        if messages is not None:
            body["messages"] = messages
            body["add_generation_prompt"] = True
            if template:  # rendered as the call counted was: a continued turn has no generation prompt
                body.update((key, template[key]) for key in TEMPLATE_FIELDS if key in template)
        else:
            body["prompt"] = prompt or ""
            body["add_special_tokens"] = False
        try:
            response = await self._http.client.post(
                self.url + "/tokenize", json=body, timeout=self._timeouts.connect_s
            )
            count = response.json().get("count") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return count if isinstance(count, int) and count >= 0 else None

    def _request(
        self,
        path: str,
        payload: bytes,
        request_id: str,
        extensions: dict[str, Any],
        accept: bytes,
        more: Headers,
    ) -> httpx.Request:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.url + path)
        headers = [*self._base_headers, (b"accept", accept), (b"x-request-id", request_id.encode()), *more]
        return httpx.Request("POST", url, headers=headers, content=payload, extensions=extensions)

    def _transport_error(self, exc: httpx.TransportError, phase: str) -> EngineError:
        if local_shortage(exc):
            return LocalOverload(f"the gateway could not call the engine: {exc}", replica=self.url)
        if isinstance(exc, httpx.ConnectTimeout):
            return EngineTimeout(
                f"connecting to the engine timed out: {exc}", replica=self.url, phase="connect"
            )
        if isinstance(exc, httpx.TimeoutException):
            return EngineTimeout(f"the engine timed out: {exc}", replica=self.url, phase=phase)
        if isinstance(exc, httpx.ConnectError):
            return EngineUnavailable(f"cannot reach the engine: {exc}", replica=self.url)
        return EngineFailed(f"the engine connection failed: {exc}", replica=self.url)


async def _close(stream: OpenAICompatStream | None) -> None:
    if stream is not None:
        await stream.aclose()


def translate_error(status: int, body: bytes, headers: httpx.Headers, replica: str) -> EngineError:
    """Turn an engine's error answer (vLLM: numeric `code`, nested or top-level) into our tree."""
    message, error_type, param = _error_fields(body)
    if status in (429, 503):
        return EngineOverloaded(
            message or "the engine is overloaded",
            replica=replica,
            status=status,
            retry_after_s=_retry_after(headers),
        )
    if status >= 500 or status < 400:
        return EngineFailed(message or f"the engine answered HTTP {status}", replica=replica, status=status)
    # a closed set of string codes (vLLM's are numbers, other engines' anything): see docs/errors.md
    if _TOO_LONG.search(message):
        code = "context_length_exceeded"
    elif status == 404:
        code = "model_not_found"
    elif status == 413:
        code = "request_too_large"
    elif param is not None:
        code = "invalid_value"
    else:
        code = "invalid_request"
    openai_type = "invalid_request_error"
    if error_type and error_type.endswith("_error"):
        openai_type = error_type  # already an OpenAI type name
    return EngineRejected(
        message or f"the engine rejected the request (HTTP {status})",
        replica=replica,
        status=status,
        error_type=openai_type,
        param=param,
        code=code,
    )


def _error_fields(body: bytes) -> tuple[str, str | None, str | None]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace").strip(), None, None
    if not isinstance(data, dict):
        return "", None, None
    error = data.get("error", data)  # current vLLM nests it; older releases put it at the top level
    if not isinstance(error, dict):
        return str(error), None, None
    message = error.get("message")
    if not isinstance(message, str):
        message = str(error.get("detail", ""))
    error_type = error.get("type")
    param = error.get("param")
    return (
        message,
        error_type if isinstance(error_type, str) else None,
        param if isinstance(param, str) else None,
    )


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after-ms")
    scale = 0.001
    if value is None:
        value, scale = headers.get("retry-after"), 1.0
    try:
        return float(value) * scale if value is not None else None
    except ValueError:
        return None
