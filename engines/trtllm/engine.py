"""Adapter for `trtllm-serve`. Its chat and completions routes, SSE framing, usage chunk and `/health` are
vLLM's, so requests go through `OpenAICompatEngine`; what differs is handled here:

- errors: every exception while handling a request comes back as HTTP 400 with a flat body
  `{"object": "error", "message", "type": "BadRequestError", "param": null, "code": 400}`, and a body that
  fails validation (unknown fields included: its request models forbid extras) as 400 `{"error": "<text>"}`.
  `openai_compat.translate_error` reads both; a prompt too long for the engine is worded
  "... should not exceed max_seq_len (N)" or "... max_num_tokens (N)", which is named
  `context_length_exceeded` here.
- tokens: there is no `/tokenize` (recent releases have `/_internal/tokenize`, prompt text only, not chat
  messages), so `count_tokens` answers None and the gateway estimates.
- statistics: `metrics_text` reads Prometheus text at `/prometheus/metrics` (served with
  `return_perf_metrics: true`; `stats.parse_prometheus_text` reads it); `/metrics` is JSON iteration stats,
  dequeued on read, so the adapter leaves it to whoever polls it (`stats.parse_iteration_stats`).
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from engines._exceptions import EngineError, EngineRejected
from engines.client import EngineReply
from engines.openai_compat import OpenAICompatEngine, OpenAICompatStream, translate_error

__all__ = ["TrtllmEngine", "translate_trtllm_error"]

PROMETHEUS_PATH = "/prometheus/metrics"

# the engine's wording for a request that does not fit (TensorRT and PyTorch backends)
_TOO_LONG = re.compile(
    r"should not exceed max_(?:seq_len|num_tokens)|exceeds? (?:the )?max(?:imum)?[ _](?:input|seq)", re.I
)


class TrtllmEngine(OpenAICompatEngine):
    """One `trtllm-serve` replica."""

    async def complete(self, path: str, payload: bytes, *, request_id: str) -> EngineReply:
        try:
            return await super().complete(path, payload, request_id=request_id)
        except EngineRejected as exc:
            _name_context_overflow(exc)
            raise

    async def stream(self, path: str, payload: bytes, *, request_id: str) -> OpenAICompatStream:
        try:
            return await super().stream(path, payload, request_id=request_id)
        except EngineRejected as exc:
            _name_context_overflow(exc)
            raise

    async def count_tokens(
        self, model: str, *, prompt: str | None = None, messages: Any = None
    ) -> int | None:
        return None  # no tokenizer route for chat messages: the gateway estimates

    async def metrics_text(self) -> str | None:
        """Prometheus text from `/prometheus/metrics`: `/metrics` here is JSON iteration stats, dequeued on
        read, which a scraper would take from whoever else polls them."""
        try:
            response = await self._http.client.get(
                self.url + PROMETHEUS_PATH, timeout=self._timeouts.connect_s
            )
            return response.text if response.status_code == 200 else None
        except (httpx.HTTPError, UnicodeDecodeError):
            return None


def translate_trtllm_error(status: int, body: bytes, headers: httpx.Headers, replica: str) -> EngineError:
    """`translate_error` with TensorRT-LLM's wording of a prompt that does not fit."""
    error = translate_error(status, body, headers, replica)
    if isinstance(error, EngineRejected):
        _name_context_overflow(error)
    return error


def _name_context_overflow(error: EngineRejected) -> None:
    if error.code is None and _TOO_LONG.search(error.message):
        error.code = "context_length_exceeded"
