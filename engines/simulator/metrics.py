"""vLLM's Prometheus metrics, with vLLM's names, labels (`model_name`, `engine`) and buckets.

Requests add to plain per-model numbers (no locks: the app runs on one event loop); a collector in
the app's own registry turns them into metric families when `/metrics` is scraped, and reads the
gauges from the scheduler at that moment.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from engines.simulator.latency import Scheduler

__all__ = ["FINISH_REASONS", "Histogram", "ModelStats", "SimulatorMetrics"]

ENGINE = "0"
# vLLM 0.32's FinishReason (vllm/v1/engine/__init__.py): every series exists from the start. A client's abort
# never adds to "abort" (the output processor drops an aborted request without finished stats).
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
_LABELS = ("model_name", "engine")

# vLLM's own bucket bounds.
_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
_REQUEST_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class ModelStats:
    """Everything counted for one served model name."""

    __slots__ = (
        "e2e",
        "generation_tokens",
        "itl",
        "prefix_hits",
        "prefix_queries",
        "prompt_tokens",
        "queue_time",
        "spec_accepted",
        "spec_draft_tokens",
        "spec_drafts",
        "success",
        "ttft",
    )

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success = dict.fromkeys(FINISH_REASONS, 0)
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.spec_drafts = 0
        self.spec_draft_tokens = 0
        self.spec_accepted = 0
        self.ttft = Histogram(_TTFT_BUCKETS)
        self.itl = Histogram(_ITL_BUCKETS)
        self.e2e = Histogram(_REQUEST_BUCKETS)
        self.queue_time = Histogram(_REQUEST_BUCKETS)


# (metric name as prometheus_client wants it: counters without `_total`, help, ModelStats attribute)
_COUNTERS = (
    ("vllm:prompt_tokens", "Number of prefill tokens processed.", "prompt_tokens"),
    ("vllm:generation_tokens", "Number of generation tokens processed.", "generation_tokens"),
    (
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        "prefix_queries",
    ),
    ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", "prefix_hits"),
    ("vllm:spec_decode_num_drafts", "Number of spec decoding drafts.", "spec_drafts"),
    ("vllm:spec_decode_num_draft_tokens", "Number of draft tokens.", "spec_draft_tokens"),
    ("vllm:spec_decode_num_accepted_tokens", "Number of accepted tokens.", "spec_accepted"),
)
_HISTOGRAMS = (
    ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", "ttft"),
    ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", "itl"),
    ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", "e2e"),
    (
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        "queue_time",
    ),
)


class SimulatorMetrics(Collector):
    def __init__(self, models: Iterable[str], scheduler: Scheduler) -> None:
        self.models = {model: ModelStats() for model in models}
        self._scheduler = scheduler
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        s = self._scheduler
        running = GaugeMetricFamily(
            "vllm:num_requests_running", "Number of requests running.", labels=_LABELS
        )
        waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting", "Number of requests waiting.", labels=_LABELS
        )
        kv = GaugeMetricFamily(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent.", labels=_LABELS
        )
        for model in self.models:
            running.add_metric((model, ENGINE), s.running[model])
            waiting.add_metric((model, ENGINE), s.waiting[model])
            # One KV cache serves every name of the engine; each label reports the whole of it.
            kv.add_metric((model, ENGINE), s.kv_usage)
        yield from (running, waiting, kv)
        for name, help_text, attribute in _COUNTERS:
            counter = CounterMetricFamily(name, help_text, labels=_LABELS)
            for model, stats in self.models.items():
                counter.add_metric((model, ENGINE), getattr(stats, attribute))
            yield counter
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=(*_LABELS, "finished_reason"),
        )
        for model, stats in self.models.items():
            for reason, count in stats.success.items():
                success.add_metric((model, ENGINE, reason), count)
        yield success
        for name, help_text, attribute in _HISTOGRAMS:
            family = HistogramMetricFamily(name, help_text, labels=_LABELS)
            for model, stats in self.models.items():
                histogram: Histogram = getattr(stats, attribute)
                family.add_metric((model, ENGINE), histogram.cumulative(), histogram.sum)
            yield family
