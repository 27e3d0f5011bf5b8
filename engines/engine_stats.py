"""What an engine says of its own load, read from its Prometheus `/metrics` text: pure parsers, one per
engine family, and the `EngineStats` they produce. The pool scrapes (engines/pool.py); routing reads the
stats (engines/routing.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["EngineStats", "MetricNames", "parse_vllm_metrics"]

Aggregate = Literal["sum", "max"]


@dataclass(frozen=True, slots=True)
class EngineStats:
    """One scrape of one replica. A field is None when the engine did not report it. Gauges are summed over
    label sets (vLLM labels them by `model_name` and `engine`), except KV-cache usage: one cache serves all
    the model names of an engine, each label reports the whole of it, so the largest value is taken.
    Counters are cumulative since the engine started."""

    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None  # 0..1
    spec_drafts: float | None = None
    spec_draft_tokens: float | None = None
    spec_accepted_tokens: float | None = None
    prefix_queries: float | None = None  # prompt tokens looked up in the prefix cache
    prefix_hits: float | None = None  # of those, tokens found cached
    scraped_at: float = 0.0  # the pool's clock (monotonic) when the scrape answered


@dataclass(frozen=True, slots=True)
class MetricNames:
    """Which exposed series feed which EngineStats field, for one engine family. A field may have several
    names (older releases' first): every name present is aggregated."""

    fields: Mapping[str, tuple[tuple[str, ...], Aggregate]]

    def table(self) -> dict[str, tuple[str, Aggregate]]:
        return {
            name: (field, aggregate) for field, (names, aggregate) in self.fields.items() for name in names
        }


VLLM = MetricNames(
    MappingProxyType(
        {
            "running": (("vllm:num_requests_running",), "sum"),
            "waiting": (("vllm:num_requests_waiting",), "sum"),
            # vLLM V0 called it gpu_cache_usage_perc
            "kv_usage": (("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"), "max"),
            "spec_drafts": (("vllm:spec_decode_num_drafts_total",), "sum"),
            "spec_draft_tokens": (("vllm:spec_decode_num_draft_tokens_total",), "sum"),
            "spec_accepted_tokens": (("vllm:spec_decode_num_accepted_tokens_total",), "sum"),
            "prefix_queries": (
                ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
                "sum",
            ),
            "prefix_hits": (("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"), "sum"),
        }
    )
)


def _parser(names: MetricNames) -> Callable[[str, float], EngineStats]:
    table = names.table()
    prefixes = tuple({name.split(":", 1)[0] + ":" for name in table})

    def parse(text: str, scraped_at: float) -> EngineStats:
        """The stats in Prometheus text exposition `text`. Lines of other metrics (histograms, `_created`
        samples, comments) are skipped at the cost of one `startswith`; malformed lines are ignored."""
        found: dict[str, float] = {}
        for line in text.splitlines():
            if not line.startswith(prefixes):
                continue
            brace = line.find("{")
            if brace >= 0:
                name = line[:brace]
                rest = line[line.rfind("}") + 1 :]
            else:
                name, _, rest = line.partition(" ")
            wanted = table.get(name)
            if wanted is None:
                continue
            parts = rest.split()
            if not parts:
                continue
            try:
                value = float(parts[0])
            except ValueError:
                continue
            if value != value:  # NaN: not a reading
                continue
            field, aggregate = wanted
            previous = found.get(field)
            if previous is None:
                found[field] = value
            elif aggregate == "sum":
                found[field] = previous + value
            elif value > previous:
                found[field] = value
        return EngineStats(**found, scraped_at=scraped_at)

    return parse


parse_vllm_metrics = _parser(VLLM)
parse_vllm_metrics.__name__ = "parse_vllm_metrics"
