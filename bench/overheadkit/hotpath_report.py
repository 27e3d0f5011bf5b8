"""The hot-path comparison's table (rows: the measures; columns: each configuration of each build, the direct
path, LiteLLM), its PASS/FAIL against issue 18's targets, and its JSON and markdown copies."""

from __future__ import annotations

import functools
import json
import operator
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from overheadkit.gateways import MINIMAL, PRODUCTION, SHARED
from overheadkit.hotpath import JSON, LONG, STREAM, Plan, Results, Wave, target_name
from overheadkit.report import DIRECT, LITELLM, Check, Row

MAX_US_PER_CHUNK = 5.0
MAX_CPU_VS_MINIMAL = {PRODUCTION: 1.25, SHARED: 1.5}
MAX_ADDED_P50_MS = 1.0
MIN_X_LITELLM = 25.0
MAX_RSS_MB = 150.0
INVALID = "INVALID"

Figure = float | str | None  # a median, INVALID when a round was invalid, None when not measured


class Medians:
    """Medians over the rounds of one run's rows, each figure per target."""

    def __init__(self, results: Results, plan: Plan) -> None:
        self.results = results
        self.plan = plan

    def of(self, target: str, part: str, concurrency: int, value: Callable[[Row], float | None]) -> Figure:
        rows = self.results.rows.get((target, part, concurrency))
        if not rows:
            return None
        if not all(r.valid for r in rows):
            return INVALID
        values = [v for r in rows if (v := value(r)) is not None]
        return statistics.median(values) if values else None

    def rps(self, target: str, part: str, concurrency: int) -> Figure:
        return self.of(target, part, concurrency, lambda r: r.result.rps if r.result else None)

    def p50(self, target: str, part: str, concurrency: int) -> Figure:
        return self.of(target, part, concurrency, lambda r: r.result.p50_ms if r.result else None)

    def p99(self, target: str, part: str, concurrency: int) -> Figure:
        return self.of(target, part, concurrency, lambda r: r.result.p99_ms if r.result else None)

    def cpu_s_per_request(
        self, target: str, part: str, concurrency: int, *, upstream: bool = False
    ) -> Figure:
        """CPU seconds per request of the target's process tree (upstream: of the upstream behind it)."""

        def per_request(row: Row) -> float | None:
            pct = row.server_cpu_pct if upstream == (target == DIRECT) else row.sim_cpu_pct
            if row.result is None or not row.result.rps or pct is None:
                return None
            return pct / 100 / row.result.rps

        return self.of(target, part, concurrency, per_request)

    def cpu_pct(self, target: str, part: str, concurrency: int) -> Figure:
        return self.of(target, part, concurrency, lambda r: r.server_cpu_pct)

    def added_p50(self, target: str) -> Figure:
        ours, direct = self.p50(target, JSON, 1), self.p50(DIRECT, JSON, 1)
        return _combine(ours, direct, lambda a, b: a - b)

    def wave(self, target: str, streams: int) -> Wave | None:
        return next((w for w in self.results.waves if (w.target, w.streams) == (target, streams)), None)


def _combine(a: Figure, b: Figure, op: Callable[[float, float], float]) -> Figure:
    if a == INVALID or b == INVALID:
        return INVALID
    if isinstance(a, float | int) and isinstance(b, float | int):
        return op(float(a), float(b))
    return None


def _ratio(a: Figure, b: Figure) -> Figure:
    return _combine(a, b, lambda x, y: x / y if y else float("nan"))


def _fmt(value: Figure, spec: str, scale: float = 1.0, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value * scale, spec) + unit


def columns(plan: Plan, results: Results) -> list[str]:
    names = [target_name(b, c) for b in plan.builds for c in plan.configs]
    names.append(DIRECT)
    if plan.litellm_venv is not None:
        names.append(LITELLM)
    return [n for n in names if n in results.targets or n == DIRECT]


def _minimal_of(target: str) -> str:
    config, _, rest = target.partition(" ")
    return MINIMAL + (f" {rest}" if rest else "") if config in (PRODUCTION, SHARED) else target


def _is_gateway(target: str) -> bool:
    return target not in (DIRECT, LITELLM)


def table_rows(m: Medians, names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(measure, one cell per column) in the order shown."""
    tokens = m.plan.long_tokens
    out: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Callable[[str], str]) -> None:
        out.append((label, [cell(n) for n in names]))

    def rps_x_litellm(part: str) -> Callable[[str], str]:
        def cell(n: str) -> str:
            value, theirs = m.rps(n, part, 50), m.rps(LITELLM, part, 50)
            ratio = _ratio(value, theirs) if n != LITELLM else None
            return _fmt(value, ",.0f") + ("" if ratio in (None, INVALID) else f" ({_fmt(ratio, '.0f')}x)")

        return cell

    def cpu_x_minimal(part: str) -> Callable[[str], str]:
        def cell(n: str) -> str:
            if not _is_gateway(n) and n != LITELLM:
                return "-"
            value = m.cpu_s_per_request(n, part, 50)
            base = m.cpu_s_per_request(_minimal_of(n), part, 50)
            ratio = _ratio(value, base) if _minimal_of(n) != n else None
            return _fmt(value, ".2f", 1e3, " ms") + (
                "" if ratio in (None, INVALID) else f" ({_fmt(ratio, '.2f')}x)"
            )

        return cell

    def gateway_only(cell: Callable[[str], str]) -> Callable[[str], str]:
        return lambda n: cell(n) if n != DIRECT else "-"

    row("JSON c=1: req/s", lambda n: _fmt(m.rps(n, JSON, 1), ",.0f"))
    row(
        "JSON c=1: p50 / p99",
        lambda n: f"{_fmt(m.p50(n, JSON, 1), '.2f')} / {_fmt(m.p99(n, JSON, 1), '.2f')} ms",
    )
    row("JSON c=1: added p50 vs direct", gateway_only(lambda n: _fmt(m.added_p50(n), "+.2f", unit=" ms")))
    row(
        "JSON c=1: gateway CPU per request",
        gateway_only(lambda n: _fmt(m.cpu_s_per_request(n, JSON, 1), ".2f", 1e3, " ms")),
    )
    row("JSON c=50: req/s (x LiteLLM)", rps_x_litellm(JSON))
    row(
        "JSON c=50: p50 / p99",
        lambda n: f"{_fmt(m.p50(n, JSON, 50), '.2f')} / {_fmt(m.p99(n, JSON, 50), '.2f')} ms",
    )
    row("JSON c=50: gateway CPU per request (x minimal)", cpu_x_minimal(JSON))
    row("stream (16 chunks) c=50: req/s (x LiteLLM)", rps_x_litellm(STREAM))
    row("stream (16 chunks) c=50: gateway CPU per request (x minimal)", cpu_x_minimal(STREAM))
    row(f"long stream ({tokens:,} chunks) c=10: streams/s", lambda n: _fmt(m.rps(n, LONG, 10), ",.1f"))
    row(
        "long stream: gateway CPU per relayed chunk",
        gateway_only(lambda n: _fmt(m.cpu_s_per_request(n, LONG, 10), ".1f", 1e6 / tokens, " us")),
    )
    row(
        "long stream: gateway CPU, % of a core",
        gateway_only(lambda n: _fmt(m.cpu_pct(n, LONG, 10), ".0f", unit="%")),
    )
    row(
        "upstream CPU per request, JSON c=50",
        lambda n: _fmt(m.cpu_s_per_request(n, JSON, 50, upstream=True), ".0f", 1e6, " us"),
    )
    row(
        "upstream CPU per relayed chunk, long stream",
        lambda n: _fmt(m.cpu_s_per_request(n, LONG, 10, upstream=True), ".2f", 1e6 / tokens, " us"),
    )
    shown: list[tuple[str, Callable[[Wave | None], str]]] = [
        ("concurrent streams: errors", _wave_errors),
        ("streams: TTFB p50 / p99", _wave_ttfb),
        ("streams: all open at once", _wave_overlap),
        ("streams: gateway peak RSS", lambda w: _fmt(w.peak_rss_mb if w else None, ".0f", unit=" MB")),
        ("streams: gateway CPU per chunk", lambda w: _wave_cpu_per_chunk(w, m.plan.wave_tokens)),
    ]
    for streams in m.plan.waves if m.results.waves else ():
        for label, show in shown:
            out.append((f"{streams:,} {label}", [show(m.wave(n, streams)) for n in names]))
    return out


def _wave_errors(wave: Wave | None) -> str:
    if wave is None:
        return "-"
    if wave.error is not None:
        return f"{INVALID}: {wave.error[:60]}"
    found = [f"{k} x{v}" for k, v in (wave.result.get("errors") or {}).items()]
    found += [f"door refused, {reason}: {count:.0f}" for reason, count in wave.door_refusals.items()]
    return str(wave.errors) + (f" ({'; '.join(found)})" if found else "")


def _wave_ttfb(wave: Wave | None) -> str:
    if wave is None or not wave.result:
        return "-"
    return f"{_fmt(wave.result.get('ttfb_p50_ms'), '.0f')} / {_fmt(wave.result.get('ttfb_p99_ms'), '.0f')} ms"


def _wave_overlap(wave: Wave | None) -> str:
    if wave is None or not wave.result or wave.result.get("ttfb_max_ms") is None:
        return "-"
    first_end, last_ttfb = wave.result.get("first_end_ms"), wave.result["ttfb_max_ms"]
    return "yes" if first_end is not None and last_ttfb < first_end else "no"


def _wave_cpu_per_chunk(wave: Wave | None, tokens: int) -> str:
    if wave is None or wave.gateway_cpu_s is None or not wave.result.get("ok"):
        return "-"
    return f"{1e6 * wave.gateway_cpu_s / (wave.result['ok'] * tokens):.1f} us"


def checks(m: Medians, plan: Plan, names: Sequence[str]) -> list[Check]:
    found: list[Check] = []
    tokens = plan.long_tokens

    def check(name: str, value: Figure, passed: Callable[[float], bool], shown: str) -> None:
        if value is None:
            found.append(Check(name, None, "not measured"))
        elif isinstance(value, str):
            found.append(Check(name, False, "an invalid measurement"))
        else:
            found.append(Check(name, passed(value), shown.format(value)))

    for build in plan.builds:
        label = f" [{build.label}]" if build.label else ""

        def of(config: str, build_: Any = build) -> str:
            return target_name(build_, config)

        for config in plan.configs:
            per_chunk = m.cpu_s_per_request(of(config), LONG, 10)
            per_chunk = _combine(per_chunk, 1.0, lambda a, _b: a * 1e6 / tokens)
            check(
                f"{config}{label}: <= {MAX_US_PER_CHUNK:g} us CPU per relayed chunk",
                per_chunk,
                lambda v: v <= MAX_US_PER_CHUNK,
                "{:.1f} us",
            )
        for config, bound in MAX_CPU_VS_MINIMAL.items():
            if config in plan.configs and MINIMAL in plan.configs:
                ratio = _ratio(
                    m.cpu_s_per_request(of(config), JSON, 50), m.cpu_s_per_request(of(MINIMAL), JSON, 50)
                )
                check(
                    f"{config}{label}: CPU per request <= {bound:g}x minimal's (JSON c=50)",
                    ratio,
                    functools.partial(operator.ge, bound),
                    "{:.2f}x",
                )
        for config in (PRODUCTION, SHARED):
            if config in plan.configs:
                check(
                    f"{config}{label}: added p50 at c=1 <= {MAX_ADDED_P50_MS:g} ms",
                    m.added_p50(of(config)),
                    lambda v: v <= MAX_ADDED_P50_MS,
                    "{:+.2f} ms",
                )
        if PRODUCTION in plan.configs:
            for part in (JSON, STREAM):
                ratio = _ratio(m.rps(of(PRODUCTION), part, 50), m.rps(LITELLM, part, 50))
                check(
                    f"production{label}: >= {MIN_X_LITELLM:g}x LiteLLM's req/s, {part} c=50",
                    ratio,
                    lambda v: v >= MIN_X_LITELLM,
                    "{:.1f}x",
                )
        for streams in plan.waves if m.results.waves else ():
            for config in plan.configs:
                wave = m.wave(of(config), streams)
                errors: Figure = None if wave is None else float(wave.errors)
                check(
                    f"{config}{label}: 0 errors at {streams:,} concurrent streams",
                    errors,
                    lambda v: v == 0,
                    "{:.0f} errors",
                )
        if m.results.waves:
            biggest = max(plan.waves)
            for config in plan.configs:
                wave = m.wave(of(config), biggest)
                rss: Figure = None if wave is None else wave.peak_rss_mb
                check(
                    f"{config}{label}: peak RSS <= {MAX_RSS_MB:g} MB at {biggest:,} streams",
                    rss,
                    lambda v: v <= MAX_RSS_MB,
                    "{:.0f} MB",
                )
    return found


def markdown(plan: Plan, results: Results, meta: dict[str, Any]) -> tuple[str, list[Check]]:
    m = Medians(results, plan)
    names = columns(plan, results)
    found = checks(m, plan, names)
    lines = [f"- {k}: {v}" for k, v in meta.items()] + [""]
    lines.append("| measure | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in table_rows(m, names)]
    lines.append("")
    lines += [f"- {c.verdict}  {c.name}: {c.detail}" for c in found]
    lines += [f"- NOT MEASURED  {name}: {why}" for name, why in results.failed.items()]
    others = [r.other_cpu_pct for rows in results.rows.values() for r in rows if r.other_cpu_pct is not None]
    if others:
        lines.append(
            f"- other processes on the machine during the rows: median {statistics.median(others):.0f}%, "
            f"max {max(others):.0f}% of a core"
        )
    return "\n".join(lines) + "\n", found


def write(
    directory: Path, stamp: str, text: str, found: Sequence[Check], results: Results, meta: dict[str, Any]
) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": meta,
        "rows": [
            {"target": t, "part": p, "concurrency": c, "round": i + 1, **_row_dict(r)}
            for (t, p, c), rows in results.rows.items()
            for i, r in enumerate(rows)
        ],
        "waves": [asdict(w) for w in results.waves],
        "failed": results.failed,
        "checks": [{**asdict(c), "verdict": c.verdict} for c in found],
    }
    paths = [directory / f"hotpath-{stamp}.json", directory / f"hotpath-{stamp}.md"]
    paths[0].write_text(json.dumps(payload, indent=2) + "\n")
    paths[1].write_text(text)
    return paths


def _row_dict(row: Row) -> dict[str, Any]:
    data = asdict(row)
    data.pop("target")
    data["mode"] = row.mode.value
    data.update(valid=row.valid, rps=row.result.rps if row.result else None, noisy=row.noisy)
    return data
