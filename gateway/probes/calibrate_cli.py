"""`tiergate probe --calibrate`: the probe set through fast, deliberate and cascade (`calibrate.collect`), the
settings swept offline (`calibration.calibrate`); the accuracy-cost frontier as a table (or `--json`) and a
PNG, and the chosen settings as a YAML file a config can `include:` (docs/configuration.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.probes.calibrate import CalibrationRun, collect
from gateway.probes.calibration import Calibration, Choice, Point, calibrate, frontier
from gateway.probes.tasks import ProbeRetries, builtin_tasks, load_tasks
from gateway.terminal import Column, print_json, print_table
from pricing import format_micros

__all__ = ["add_calibrate_options", "calibration_yaml", "run_calibrate_command"]

NOT_MET_EXIT = 3  # some model reaches the target with no setting tried: the most accurate was written


def add_calibrate_options(probe: Any) -> None:
    probe.add_argument(
        "--calibrate",
        action="store_true",
        help="find per model the cascade threshold and vote stop_confidence that reach --target-accuracy at"
        " the least cost; print the frontier, draw it (--plot), write the settings (--output)",
    )
    probe.add_argument("--target-accuracy", type=float, default=0.9, help="--calibrate: 0-1")
    probe.add_argument(
        "--output", type=Path, default=Path("tiergate-calibration.yaml"), help="--calibrate: settings"
    )
    probe.add_argument(
        "--plot", type=Path, default=Path("tiergate-calibration.png"), help="--calibrate: the frontier"
    )
    probe.add_argument("--wave", type=int, default=2, help="--calibrate: the adaptive vote's wave")
    probe.add_argument(
        "--cascade-samples", type=int, default=3, help="--calibrate: the cascade's k (its `samples`)"
    )


def run_calibrate_command(args: argparse.Namespace) -> None:
    if not 0 < args.target_accuracy <= 1 or args.wave < 1 or args.cascade_samples < 1:
        sys.exit("tiergate probe: --target-accuracy must be in (0, 1], --wave and --cascade-samples >= 1")
    effort = args.effort or "high"
    try:
        runs, cascading = asyncio.run(_runs(args, effort))
    except (httpx.HTTPError, ValueError) as exc:
        sys.exit(f"tiergate probe: {exc}")
    results: dict[str, Calibration] = {}
    for run in runs:
        if not run.records:
            sys.exit(f"tiergate probe: {run.model}: no task was answered by both tiers")
        results[run.model] = calibrate(
            run.records, args.target_accuracy, wave=args.wave, cascade=run.model in cascading
        )
    args.output.write_text(calibration_yaml(results, effort, args.target_accuracy), encoding="utf-8")
    plotted = _plot(results, args.target_accuracy, args.plot)
    if args.json:
        print_json(
            {
                "target_accuracy": args.target_accuracy,
                "effort": effort,
                "output": str(args.output),
                "plot": str(args.plot) if plotted else None,
                "models": {run.model: _json(run, results[run.model]) for run in runs},
            }
        )
    else:
        for run in runs:
            print(f"{run.model}: {len(run.records)} tasks, {run.failed} failed, effort {effort}")
            print_table(COLUMNS, (_row(point, results[run.model]) for point in _shown(results[run.model])))
        print(f"settings written to {args.output}" + (f", frontier drawn in {args.plot}" if plotted else ""))
    missed = [m for m, r in results.items() if not all(c.met for c in (r.deliberate, r.cascade) if c)]
    for model in missed:
        print(
            f"tiergate probe: {model}: no setting reaches {args.target_accuracy:.1%} accuracy;"
            " the most accurate was written",
            file=sys.stderr,
        )
    for run in runs:
        if run.short_votes:
            print(
                f"tiergate probe: {run.model}: {run.short_votes} deliberations drew fewer than"
                f" {run.max_samples} samples (an adaptive level?): replayed over the samples drawn",
                file=sys.stderr,
            )
    if missed:
        sys.exit(NOT_MET_EXIT)


async def _runs(args: argparse.Namespace, effort: str) -> tuple[list[CalibrationRun], set[str]]:
    tasks = load_tasks(args.tasks) if args.tasks else builtin_tasks(args.count, args.seed, args.difficulty)
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    retries = ProbeRetries(args.max_retries, args.max_retry_wait)
    async with httpx.AsyncClient(base_url=args.url.rstrip("/"), headers=headers, timeout=600) as client:
        listed = await client.get("/v1/models")
        if listed.status_code != 200:
            raise ValueError(f"GET /v1/models: HTTP {listed.status_code}: {listed.text[:200]}")
        offered = {(card["root"], card["tier"]) for card in listed.json()["data"]}
        both = {model for model, tier in offered if tier == "fast"} & {
            model for model, tier in offered if tier == "deliberate"
        }
        models = args.model or sorted(both)
        if not models or not set(models) <= both:
            raise ValueError(f"calibration needs a fast and a deliberate tier: {sorted(both)} have both")
        cascading = {model for model in models if (model, "cascade") in offered}
        show = sys.stderr.isatty() if args.progress is None else args.progress

        def progress(model: str) -> Any:
            def report(done: int, total: int) -> None:
                if show and (done == total or done % max(total // 10, 1) == 0):
                    print(f"{model}: {done}/{total} tasks", file=sys.stderr, flush=True)

            return report

        runs = [
            await collect(
                client,
                model,
                tasks,
                effort=effort,
                samples=args.cascade_samples,
                concurrency=args.concurrency,
                retries=retries,
                on_task=progress(model),
            )
            for model in models
        ]
    return runs, cascading


COLUMNS = (
    "tier",
    "setting",
    Column("accuracy", numeric=True),
    Column("cost", numeric=True),
    Column("per right", numeric=True),
    "",
)


_CASCADE_ROWS = 12


def _shown(result: Calibration) -> list[Point]:
    """The table's rows: the fast tier, every vote setting, the frontier's cascades and the chosen ones."""
    chosen = [c.point for c in (result.deliberate, result.cascade) if c is not None]
    rows = [p for p in result.points if p.tier != "cascade"]
    cascades = [p for p in frontier(result.points) if p.tier == "cascade"]
    step = -(-len(cascades) // _CASCADE_ROWS)  # a frontier of many thresholds, thinned (--json has all)
    rows += [p for i, p in enumerate(cascades) if i % step == 0 or i == len(cascades) - 1]
    rows += [p for p in chosen if p not in rows]
    return sorted(rows, key=lambda p: (p.cost, -p.accuracy))


def _mark(point: Point, result: Calibration) -> str:
    marks = []
    for choice in (result.deliberate, result.cascade):
        if choice is not None and choice.point == point:
            marks.append("chosen" if choice.met else "chosen (target missed)")
    if point in frontier(result.points):
        marks.append("frontier")
    return ", ".join(marks)


def _row(point: Point, result: Calibration) -> list[Any]:
    per_right = point.cost_per_right_micros
    return [
        point.tier,
        point.setting,
        f"{float(point.accuracy):.1%}",
        format_micros(point.cost_micros),
        format_micros(per_right) if per_right is not None else None,
        _mark(point, result),
    ]


def _point_json(point: Point) -> dict[str, Any]:
    return {
        "tier": point.tier,
        "threshold": point.threshold,
        "stop_confidence": point.stop,
        "accuracy": round(float(point.accuracy), 4),
        "cost_micros": point.cost_micros,
        "cost_per_correct_micros": point.cost_per_right_micros,
    }


def _choice_json(choice: Choice | None) -> dict[str, Any] | None:
    return None if choice is None else {**_point_json(choice.point), "met": choice.met}


def _json(run: CalibrationRun, result: Calibration) -> dict[str, Any]:
    return {
        "tasks": len(run.records),
        "failed": run.failed,
        "samples": run.max_samples,
        "deliberate": _choice_json(result.deliberate),
        "cascade": _choice_json(result.cascade),
        "frontier": [_point_json(p) for p in frontier(result.points)],
        "points": [_point_json(p) for p in result.points],
    }


def calibration_yaml(results: dict[str, Calibration], effort: str, target: float) -> str:
    """The chosen settings, per model, in the config's own shape (`include:` it from the config)."""
    models: dict[str, Any] = {}
    for model, result in results.items():
        stop = result.deliberate.point.stop if result.cascade is None else result.cascade.point.stop
        level: dict[str, Any] = {"adaptive": stop is not None}
        if stop is not None:
            level["stop_confidence"] = stop
        entry: dict[str, Any] = {"tiers": {"deliberate": {"deliberation": {"efforts": {effort: level}}}}}
        if result.cascade is not None:
            entry["cascade"] = {"threshold": result.cascade.point.threshold}
        models[model] = entry
    header = (
        f"# written by `tiergate probe --calibrate --target-accuracy {target}`: the cheapest settings that\n"
        f"# reached the target on the probe set. Include it from the config (`include: [this file]`); the\n"
        f"# config must define the `{effort}` effort level itself (its floor, cap, samples): this file sets\n"
        f"# its vote only, and the gateway refuses to start on an include that tunes a level not defined.\n"
    )
    return header + yaml.safe_dump({"models": models}, sort_keys=True)


def _plot(results: dict[str, Calibration], target: float, path: Path) -> bool:
    """The accuracy-cost plane per model as a PNG; False (and a line on stderr) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # a file, never a display
        import matplotlib.pyplot as plt
    except ImportError:
        print("tiergate probe: no PNG without matplotlib (pip install 'tiergate[plot]')", file=sys.stderr)
        return False
    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (model, result) in zip(axes[0], results.items(), strict=True):
        for tier, colour, marker in (
            ("cascade", "tab:orange", "o"),
            ("deliberate", "tab:blue", "s"),
            ("fast", "tab:green", "D"),
        ):
            points = [p for p in result.points if p.tier == tier]
            ax.scatter(
                [p.cost_micros / 1e6 for p in points],
                [float(p.accuracy) for p in points],
                s=12 if tier == "cascade" else 36,
                alpha=0.5 if tier == "cascade" else 0.9,
                color=colour,
                marker=marker,
                label=tier,
            )
        line = frontier(result.points)
        ax.plot([p.cost_micros / 1e6 for p in line], [float(p.accuracy) for p in line], color="black", lw=1)
        for choice in (result.deliberate, result.cascade):
            if choice is not None:
                point = choice.point
                ax.scatter([point.cost_micros / 1e6], [float(point.accuracy)], marker="*", s=160, color="red")
                label = f"{point.tier}: {point.setting}"
                where = (point.cost_micros / 1e6, float(point.accuracy))
                ax.annotate(label, where, xytext=(8, -10), textcoords="offset points", fontsize=7)
        ax.axhline(target, color="grey", ls="--", lw=1)
        ax.set(
            title=f"{model}: accuracy against cost",
            xlabel="cost of the probe set (the price book's currency)",
            ylabel="accuracy",
        )
        ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
    return True
