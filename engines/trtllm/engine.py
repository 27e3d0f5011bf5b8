"""Adapter for `trtllm-serve`. Its chat and completions routes, SSE framing, usage chunk and `/health` are
vLLM's, so requests go through `OpenAICompatEngine`; what differs is handled here:

- errors: every exception while handling a request comes back as HTTP 400 with a flat body
  `{"object": "error", "message", "type": "BadRequestError", "param": null, "code": 400}`, and a body that
  fails validation (unknown fields included: its request models forbid extras) as 400 `{"error": "<text>"}`.
  `openai_compat.translate_error` reads both, and names a prompt too long for the engine ("... should not
  exceed max_seq_len (N)" or "... max_num_tokens (N)") `context_length_exceeded`, as it does vLLM's.
- tokens: there is no `/tokenize` (recent releases have `/_internal/tokenize`, prompt text only, not chat
  messages), so `count_tokens` answers None and the gateway estimates.
- statistics: `metrics_text` reads Prometheus text at `/prometheus/metrics` (served with
  `return_perf_metrics: true`; `stats.parse_prometheus_text` reads it); `/metrics` is JSON iteration stats,
  dequeued on read, so the adapter leaves it to whoever polls it (`stats.parse_iteration_stats`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engines.openai_compat import OpenAICompatEngine

__all__ = ["PROMETHEUS_PATH", "TrtllmEngine"]

PROMETHEUS_PATH = "/prometheus/metrics"


class TrtllmEngine(OpenAICompatEngine):
    """One `trtllm-serve` replica."""

    # Prometheus text (with `return_perf_metrics: true`): `/metrics` here is JSON iteration stats, dequeued
    # on read, which a scraper would take from whoever else polls them
    metrics_path = PROMETHEUS_PATH

    async def count_tokens(
        self,
        model: str,
        *,
        prompt: str | None = None,
        messages: Any = None,
        template: Mapping[str, Any] | None = None,
    ) -> int | None:
        return None  # no tokenizer route for chat messages: the gateway estimates
