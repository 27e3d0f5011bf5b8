"""Reading Prometheus text in tests: one parser (prometheus_client's) for every metric a test checks, the
gateway's and the engines' alike."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["metric", "sample_values", "scrape"]


def scrape(url: str) -> str:
    """A server's `/metrics` text (`url` without the path)."""
    return httpx.get(url + "/metrics", timeout=10).text


def sample_values(text: str, name: str, **labels: str) -> list[float]:
    """Every sample of `name` whose labels include `labels`."""
    return [
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of those samples (0 when there is none)."""
    return sum(sample_values(text, name, **labels))
