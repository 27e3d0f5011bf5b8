"""Which parser reads which engine family's metrics: vLLM's Prometheus text, TensorRT-LLM's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from engines.engine_stats import EngineStats, parse_vllm_metrics
from engines.trtllm.stats import parse_prometheus_text

__all__ = ["PARSERS", "parse_metrics"]

# "openai": any other OpenAI-compatible engine; vLLM's names are the likeliest, and absent ones read as None
PARSERS: Mapping[str, Callable[[str, float], EngineStats]] = MappingProxyType(
    {"vllm": parse_vllm_metrics, "openai": parse_vllm_metrics, "trtllm": parse_prometheus_text}
)


def parse_metrics(text: str, scraped_at: float, family: str = "vllm") -> EngineStats:
    try:
        parser = PARSERS[family]
    except KeyError:
        raise ValueError(
            f"no metrics parser for engine family {family!r}; known: {sorted(PARSERS)}"
        ) from None
    return parser(text, scraped_at)
