"""Result rows, the pass/fail targets, and the text/markdown/JSON renderings of one run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from overheadkit.chat import Mode
from overheadkit.wrk import WrkResult

DIRECT, TIERGATE, LITELLM = "direct", "tiergate", "litellm"
RESPONSES = "responses"  # tiergate's /v1/responses, measured on the same process as its chat completions
HIGH_CONCURRENCY, LOW_CONCURRENCY = 50, 1
MIN_RATIO_VS_LITELLM = 15.0
MAX_ADDED_P50_MS = 1.0
MAX_PEAK_RSS_MB = 150.0
MIN_RESPONSES_VS_CHAT = 0.8
# Foreign CPU above this (in % of one core) during a row means a 2-core machine was shared, so the
# row's numbers are suspect; such rows are re-measured and, if still noisy, flagged.
NOISY_OTHER_CPU_PCT = 25.0


@dataclass
class Row:
    target: str
    mode: Mode
    concurrency: int
    result: WrkResult | None = None
    error: str | None = None
    # VmHWM of the target's process tree since it started, read right after this row's load.
    peak_rss_mb: float | None = None
    # CPU used during the row as % of one core: the target's tree, and the simulator behind a proxy.
    server_cpu_pct: float | None = None
    sim_cpu_pct: float | None = None
    # Everything else on the machine during the row (other tenants, this script), same unit.
    other_cpu_pct: float | None = None
    added_p50_ms: float | None = None

    @property
    def valid(self) -> bool:
        return self.error is None and self.result is not None and self.result.valid

    @property
    def noisy(self) -> bool:
        return self.other_cpu_pct is not None and self.other_cpu_pct > NOISY_OTHER_CPU_PCT

    @property
    def wrk_cpu_pct(self) -> float | None:
        if self.result is None or self.result.duration_s <= 0:
            return None
        return 100 * self.result.wrk_cpu_s / self.result.duration_s

    def problem(self) -> str:
        """Why the row is invalid, or an empty string."""
        if self.error is not None:
            # Errors can carry a log tail; the table only needs the first line.
            return self.error.splitlines()[0][:200]
        if self.result is None:
            return "not run"
        r = self.result
        reasons = [
            f"{r.non2xx} non-2xx" if r.non2xx else "",
            f"{r.bad_body} bad bodies" if r.bad_body else "",
            f"{r.socket_errors} socket errors" if r.socket_errors else "",
            "no requests completed" if r.requests == 0 else "",
        ]
        return ", ".join(x for x in reasons if x)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None  # None: not evaluated because a compared target was not selected
    detail: str

    @property
    def verdict(self) -> str:
        return "SKIP" if self.passed is None else ("PASS" if self.passed else "FAIL")


def find(rows: Sequence[Row], target: str, mode: Mode, concurrency: int) -> Row | None:
    for row in rows:
        if (row.target, row.mode, row.concurrency) == (target, mode, concurrency):
            return row
    return None


def fill_added_latency(rows: Sequence[Row]) -> None:
    """Added p50 = target p50 - direct p50 at the same mode and concurrency (both must be valid)."""
    for row in rows:
        base = find(rows, DIRECT, row.mode, row.concurrency)
        if row.target != DIRECT and base and base.valid and row.valid and row.result and base.result:
            row.added_p50_ms = row.result.p50_ms - base.result.p50_ms


def ratio(rows: Sequence[Row], mode: Mode) -> float | None:
    """tiergate req/s over LiteLLM req/s at c=50, or None when either row is missing or invalid."""
    ours, theirs = find(rows, TIERGATE, mode, HIGH_CONCURRENCY), find(rows, LITELLM, mode, HIGH_CONCURRENCY)
    if not (ours and theirs and ours.valid and theirs.valid and ours.result and theirs.result):
        return None
    return ours.result.rps / theirs.result.rps if theirs.result.rps > 0 else None


def evaluate(rows: Sequence[Row], selected: Sequence[str]) -> list[Check]:
    checks: list[Check] = []
    for mode in Mode:
        checks.append(_ratio_check(rows, mode, selected))
    for mode in Mode:
        checks.append(_latency_check(rows, mode, selected))
    checks.append(_rss_check(rows, selected))
    for mode in Mode:
        checks.append(_responses_check(rows, mode, selected))
    return checks


def _responses_check(rows: Sequence[Row], mode: Mode, selected: Sequence[str]) -> Check:
    name = f"responses >= {MIN_RESPONSES_VS_CHAT:.0%} of chat req/s, {mode.value}, c={HIGH_CONCURRENCY}"
    if RESPONSES not in selected or TIERGATE not in selected:
        return Check(name, None, "tiergate or responses not selected")
    ours, chat = find(rows, RESPONSES, mode, HIGH_CONCURRENCY), find(rows, TIERGATE, mode, HIGH_CONCURRENCY)
    if not (ours and chat and ours.valid and chat.valid and ours.result and chat.result and chat.result.rps):
        return Check(name, False, "no valid measurement")
    value = ours.result.rps / chat.result.rps
    return Check(name, value >= MIN_RESPONSES_VS_CHAT, f"{value:.0%}")


def _ratio_check(rows: Sequence[Row], mode: Mode, selected: Sequence[str]) -> Check:
    name = f"tiergate >= {MIN_RATIO_VS_LITELLM:g}x LiteLLM req/s, {mode.value}, c={HIGH_CONCURRENCY}"
    if TIERGATE not in selected or LITELLM not in selected:
        return Check(name, None, "tiergate or litellm not selected")
    value = ratio(rows, mode)
    if value is None:
        return Check(name, False, "no valid measurement")
    return Check(name, value >= MIN_RATIO_VS_LITELLM, f"{value:.1f}x")


def _latency_check(rows: Sequence[Row], mode: Mode, selected: Sequence[str]) -> Check:
    name = f"tiergate added p50 <= {MAX_ADDED_P50_MS:g} ms, {mode.value}, c={LOW_CONCURRENCY}"
    if TIERGATE not in selected or DIRECT not in selected:
        return Check(name, None, "tiergate or direct not selected")
    row = find(rows, TIERGATE, mode, LOW_CONCURRENCY)
    if row is None or row.added_p50_ms is None:
        return Check(name, False, "no valid measurement")
    return Check(name, row.added_p50_ms <= MAX_ADDED_P50_MS, f"{row.added_p50_ms:.3f} ms")


def _rss_check(rows: Sequence[Row], selected: Sequence[str]) -> Check:
    name = f"tiergate peak RSS <= {MAX_PEAK_RSS_MB:g} MB"
    if TIERGATE not in selected:
        return Check(name, None, "tiergate not selected")
    peaks = [r.peak_rss_mb for r in rows if r.target == TIERGATE and r.peak_rss_mb is not None]
    if not peaks:
        return Check(name, False, "not measured")
    return Check(name, max(peaks) <= MAX_PEAK_RSS_MB, f"{max(peaks):.1f} MB")


_HEADER = (
    "target",
    "mode",
    "conc",
    "req/s",
    "p50 ms",
    "p99 ms",
    "+p50 ms",
    "peak RSS MB",
    "non-2xx",
    "sock err",
    "srv CPU%",
    "sim CPU%",
    "wrk CPU%",
    "other CPU%",
    "valid",
)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cells(row: Row) -> list[str]:
    r = row.result
    return [
        row.target,
        row.mode.value,
        str(row.concurrency),
        fmt(r.rps if r else None, ".0f"),
        fmt(r.p50_ms if r else None, ".2f"),
        fmt(r.p99_ms if r else None, ".2f"),
        fmt(row.added_p50_ms, "+.2f"),
        fmt(row.peak_rss_mb, ".1f"),
        str(r.non2xx) if r else "-",
        str(r.socket_errors) if r else "-",
        fmt(row.server_cpu_pct, ".0f"),
        fmt(row.sim_cpu_pct, ".0f"),
        fmt(row.wrk_cpu_pct, ".0f"),
        fmt(row.other_cpu_pct, ".0f"),
        "yes" if row.valid else "NO",
    ]


def _summary_lines(rows: Sequence[Row], checks: Sequence[Check]) -> list[str]:
    lines = []
    for mode in Mode:
        value = ratio(rows, mode)
        shown = "n/a" if value is None else f"{value:.1f}x"
        lines.append(f"tiergate/LiteLLM req/s at c={HIGH_CONCURRENCY}, {mode.value}: {shown}")
    lines += [f"{c.verdict}  {c.name}: {c.detail}" for c in checks]
    lines += [
        f"INVALID  {r.target} {r.mode.value} c={r.concurrency}: {r.problem()}" for r in rows if not r.valid
    ]
    lines += [
        f"NOISY    {r.target} {r.mode.value} c={r.concurrency}: other processes used "
        f"{r.other_cpu_pct:.0f}% of a core during the row; rerun on a quiet machine"
        for r in rows
        if r.noisy
    ]
    return lines


def text_table(rows: Sequence[Row], checks: Sequence[Check]) -> str:
    table = [list(_HEADER), *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_HEADER))]
    # Left-align the three label columns, right-align the numbers.
    out = [
        "  ".join(
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]
    return "\n".join([*out, "", *_summary_lines(rows, checks)])


def markdown(rows: Sequence[Row], checks: Sequence[Check], meta: dict[str, Any]) -> str:
    head = "| " + " | ".join(_HEADER) + " |"
    sep = "|" + "|".join("---" if i < 3 else "---:" for i in range(len(_HEADER))) + "|"
    body = ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    meta_lines = [f"- {k}: {v}" for k, v in meta.items()]
    summary = [f"- {line}" for line in _summary_lines(rows, checks)]
    return "\n".join([*meta_lines, "", head, sep, *body, "", *summary]) + "\n"


def to_json(rows: Sequence[Row], checks: Sequence[Check], meta: dict[str, Any]) -> str:
    def row_dict(row: Row) -> dict[str, Any]:
        data = asdict(row)
        data["mode"] = row.mode.value
        data["valid"] = row.valid
        data["rps"] = row.result.rps if row.result else None
        data["wrk_cpu_pct"] = row.wrk_cpu_pct
        data["noisy"] = row.noisy
        return data

    ratios = {mode.value: ratio(rows, mode) for mode in Mode}
    payload = {
        "meta": meta,
        "rows": [row_dict(r) for r in rows],
        "ratio_tiergate_over_litellm_c50": ratios,
        "checks": [{**asdict(c), "verdict": c.verdict} for c in checks],
    }
    return json.dumps(payload, indent=2) + "\n"


def write_results(
    directory: Path, stamp: str, rows: Sequence[Row], checks: Sequence[Check], meta: dict[str, Any]
) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"overhead-{stamp}.json", directory / f"overhead-{stamp}.md"]
    paths[0].write_text(to_json(rows, checks, meta))
    paths[1].write_text(markdown(rows, checks, meta))
    return paths
