"""The user docs stay true to the code: every `x-tiergate-*` header the gateway reads or writes is in the API
reference, every error code it answers is in docs/errors.md, every metric the docs name exists, and every link
between the docs (anchors included) leads somewhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
SOURCES = ("gateway", "engines", "pricing")

_METRIC_CLASSES = r"(?:Counter|Gauge|Histogram|Summary)(?:MetricFamily)?"
_METRIC_DEFINITION = re.compile(_METRIC_CLASSES + r"\(\s*\"(tiergate_[a-z0-9_]+)\"")
_SAMPLE_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _source_text() -> Iterator[tuple[Path, str]]:
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, path.read_text(encoding="utf-8")


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _code_headers() -> set[str]:
    headers: set[str] = set()
    for _, text in _source_text():
        headers.update(re.findall(r"x-tiergate-[a-z]+(?:-[a-z]+)*", text))
    return headers


def _code_error_codes() -> set[str]:
    codes: set[str] = set()
    for _, text in _source_text():
        codes.update(re.findall(r"\bcode=\"([a-z_]+)\"", text))
        codes.update(re.findall(r"_unavailable\(\s*\"[^\"]*\",\s*\"([a-z_]+)\"", text))  # admission's 503s
        codes.update(re.findall(r"outage\(\s*\"[^\"]*\",\s*\"([a-z_]+)\"", text))  # the routes' 503s
    return codes


def _code_metrics() -> set[str]:
    metrics: set[str] = set()
    for _, text in _source_text():
        metrics.update(_METRIC_DEFINITION.findall(text))
    return metrics


def _family(sample: str) -> str:
    for suffix in _SAMPLE_SUFFIXES:
        if sample.endswith(suffix):
            return sample.removesuffix(suffix)
    return sample


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_slug(heading) for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def test_the_code_is_read() -> None:
    """The scans below find what they look for: a regex that matched nothing would pass vacuously."""
    headers = {"x-tiergate-tier", "x-tiergate-depth", "x-tiergate-request-id", "x-tiergate-auto"}
    assert headers <= _code_headers()
    assert {"model_not_found", "max_tokens_below_depth_floor", "database_unavailable"} <= _code_error_codes()
    assert {"key_store_unavailable", "limiter_unavailable", "budget_unavailable"} <= _code_error_codes()
    assert {"tiergate_requests", "tiergate_ledger_write_failures", "tiergate_replica_up"} <= _code_metrics()


def test_every_tiergate_header_is_in_the_api_reference() -> None:
    reference = (DOCS / "api-reference.md").read_text(encoding="utf-8")
    missing = sorted(header for header in _code_headers() if f"`{header}`" not in reference)
    assert not missing, f"headers the gateway uses, missing from docs/api-reference.md: {missing}"


def test_the_api_reference_names_no_header_the_code_lacks() -> None:
    reference = (DOCS / "api-reference.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"x-tiergate-[a-z]+(?:-[a-z]+)*", reference))
    unknown = sorted(documented - _code_headers())
    assert not unknown, f"docs/api-reference.md names headers the gateway does not have: {unknown}"


def test_every_error_code_is_in_the_errors_page() -> None:
    errors = (DOCS / "errors.md").read_text(encoding="utf-8")
    missing = sorted(code for code in _code_error_codes() if f"`{code}`" not in errors)
    assert not missing, f"error codes the gateway answers, missing from docs/errors.md: {missing}"


@pytest.mark.parametrize("page", _docs(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_metric_the_docs_name_exists(page: Path) -> None:
    metrics = _code_metrics()
    named = set(re.findall(r"\btiergate_[a-z0-9_]+", page.read_text(encoding="utf-8")))
    unknown = sorted(name for name in named if _family(name) not in metrics and name not in metrics)
    assert not unknown, f"{page.name} names metrics that no code defines: {unknown}"


@pytest.mark.parametrize("page", _docs(), ids=lambda path: str(path.relative_to(ROOT)))
def test_links_between_the_docs_lead_somewhere(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        found = linked.exists() and (not anchor or linked.suffix != ".md" or anchor in _anchors(linked))
        if not found:
            broken.append(target)
    assert not broken, f"{page.name} links to what does not exist: {broken}"
