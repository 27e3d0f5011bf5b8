"""TensorRT-LLM's `trtllm-serve`: an adapter over the OpenAI-compatible one, and pure parsers of its
engine statistics (`/metrics` JSON iteration stats, `/prometheus/metrics` text)."""

from engines.trtllm.engine import TrtllmEngine
from engines.trtllm.stats import parse_iteration_stats, parse_prometheus_text

__all__ = [
    "TrtllmEngine",
    "parse_iteration_stats",
    "parse_prometheus_text",
]
