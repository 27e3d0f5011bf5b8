"""TensorRT-LLM's engine statistics, read by pure functions into one small summary.

Two sources, both from `trtllm-serve`:

- `GET /metrics`: a JSON array of per-iteration dicts (needs `enable_iter_perf_stats: true`), *dequeued on
  read*: each read returns the iterations since the previous one. Fields used: `iter`, `numActiveRequests`,
  `numQueuedRequests`, `kvCacheStats.{usedNumBlocks, maxNumBlocks}`, `specDecodingStats.{numDraftTokens,
  numAcceptedTokens}`. Some releases put each iteration in the array as a JSON string; both are read.
- `GET /prometheus/metrics`: Prometheus text (needs `return_perf_metrics: true`), names prefixed `trtllm_`:
  gauges `trtllm_num_requests_running`, `trtllm_num_requests_waiting`, `trtllm_kv_cache_utilization`
  (0-1), counters `trtllm_spec_decode_num_draft_tokens_total`, `trtllm_spec_decode_num_accepted_tokens_total`
  (per iteration) or `trtllm_spec_decode_drafted_tokens_total`, `trtllm_spec_decode_accepted_tokens_total`
  (per finished request).

Both give `engines.engine_stats.EngineStats`, as the vLLM parser does. Its spec-decode counts are totals since
the engine started when read from Prometheus, and the sums over the iterations of one read from `/metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from engines.engine_stats import EngineStats

__all__ = ["parse_iteration_stats", "parse_prometheus_text"]


def parse_iteration_stats(data: Any, scraped_at: float = 0.0) -> EngineStats | None:
    """Summarise one read of `/metrics` (the parsed JSON array): the gauges of its latest iteration, the
    spec-decode tokens of all of them. None when it holds no iteration (nothing ran since the last read)."""
    if not isinstance(data, list):
        raise ValueError("iteration stats are a JSON array")
    iterations = [it for it in (_iteration(entry) for entry in data) if it is not None]
    if not iterations:
        return None
    latest = max(iterations, key=lambda it: _number(it.get("iter")) or 0)
    kv = latest.get("kvCacheStats")
    kv_usage = None
    if isinstance(kv, dict):
        used, total = _number(kv.get("usedNumBlocks")), _number(kv.get("maxNumBlocks"))
        if used is not None and total:
            kv_usage = used / total
    specs = [it["specDecodingStats"] for it in iterations if isinstance(it.get("specDecodingStats"), dict)]
    return EngineStats(
        running=_int(latest.get("numActiveRequests")),
        waiting=_int(latest.get("numQueuedRequests")),
        kv_usage=kv_usage,
        spec_draft_tokens=_total(spec.get("numDraftTokens") for spec in specs),
        spec_accepted_tokens=_total(spec.get("numAcceptedTokens") for spec in specs),
        scraped_at=scraped_at,
    )


def parse_prometheus_text(text: str, scraped_at: float = 0.0) -> EngineStats:
    """Summarise a scrape of `/prometheus/metrics` (a pool's metrics parser: `(text, scraped_at)`); series of
    several label sets are added up (the KV usage: the highest). Text that is not the Prometheus format gives
    no readings."""
    values: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values.setdefault(sample.name, []).append(sample.value)
    except ValueError:  # a scrape cut short or garbled: what was read before still counts
        pass

    def total(*names: str) -> int | None:
        for name in names:
            if name in values:
                return int(sum(values[name]))
        return None

    kv = values.get("trtllm_kv_cache_utilization")
    return EngineStats(
        running=total("trtllm_num_requests_running"),
        waiting=total("trtllm_num_requests_waiting"),
        kv_usage=max(kv) if kv else None,
        spec_draft_tokens=total(
            "trtllm_spec_decode_num_draft_tokens_total", "trtllm_spec_decode_drafted_tokens_total"
        ),
        spec_accepted_tokens=total(
            "trtllm_spec_decode_num_accepted_tokens_total", "trtllm_spec_decode_accepted_tokens_total"
        ),
        scraped_at=scraped_at,
    )


def _iteration(entry: Any) -> dict[str, Any] | None:
    if isinstance(entry, str | bytes):
        try:
            entry = orjson.loads(entry)
        except orjson.JSONDecodeError:
            return None
    return entry if isinstance(entry, dict) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _total(values: Iterable[Any]) -> int | None:
    numbers = [number for number in map(_number, values) if number is not None]
    return int(sum(numbers)) if numbers else None
