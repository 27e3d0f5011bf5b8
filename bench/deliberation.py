"""What depth buys, on the simulator's skill model: accuracy, mean reasoning tokens, cost and cost per right
answer of the fast tier and of the deliberate tier at each effort level, over the built-in probe set. A
command, not a test:

    python bench/deliberation.py [--tasks 200] [--difficulty 3] [--wave 2] [--stop-confidence 0.95]
                                 [--threshold 0.5] [--cascade-samples 3] [--logprob-noise 1.0] [--json]

The simulator answers an arithmetic task right with a probability that grows with the reasoning tokens
spent on it (docs/simulator.md, "Skill model"); the fast pool does not reason. The gateway runs as
`tiergate serve` with the depth levels below, the engines as `tiergate simulate`; requests go through the
gateway like any client's (`gateway.probes.tasks.run_probe`). Expected (issue 5): a clear accuracy gain
for the deliberate tier at high effort over fast, produced by the mechanism (depth floor,
self-consistency), not a constant. And (issue 15) adaptive self-consistency - the `xhigh` level here: high's
5 samples at most, drawn 2 a wave until the vote is settled (docs/deliberation.md) - draws at least 40%
fewer samples than high's fixed 5-sample vote at no more than 1 point less accuracy.

The cascade (issue 15): `qwen3-8b:cascade` at high effort - the fast tier's k samples scored by their
agreement and logprobs, the deliberate tier at high effort below the threshold. Its target: at least 95% of
deliberate-high's accuracy at no more than 40% of its cost. The bench also asks the fast tier for k samples
with logprobs, scores them as the cascade does (`gateway.deliberation.confidence`) and prints the AUROC of
that confidence against the delivered sample's correctness, at the simulator's `--logprob-noise`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import httpx
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from overheadkit.procs import free_port, managed

from gateway.deliberation.confidence import score_samples
from gateway.deliberation.vote import extract_answer
from gateway.probes.cli import table
from gateway.probes.tasks import ProbeResult, ProbeTask, builtin_tasks, run_probe

ROOT = Path(__file__).parents[1]
# the gateway's default depth promise per effort (gateway/settings/models.py), so that floors are met as in
# production: a floor missed is billed at fast prices, and would make the deliberate tier look cheap
EFFORTS: dict[str, dict[str, object]] = {
    "low": {"floor": 256, "cap": 1024, "samples": 1, "max_extensions": 3},
    "medium": {"floor": 512, "cap": 2048, "samples": 1, "max_extensions": 4},
    "high": {"floor": 1024, "cap": 4096, "samples": 5, "max_extensions": 6},
    # high, adaptive: the same 5 samples at most, 2 a wave, stopped when the vote is settled
    "xhigh": {
        "floor": 1024,
        "cap": 4096,
        "samples": 5,
        "max_extensions": 6,
        "adaptive": True,
        "wave": 2,
        "stop_confidence": 0.95,
    },
}
SAVING_TARGET = 0.4  # adaptive draws at least this share fewer samples than the fixed vote
ACCURACY_SLACK = 0.01  # at no more than this much less accuracy
CASCADE_ACCURACY = 0.95  # the cascade reaches at least this share of deliberate-high's accuracy
CASCADE_COST = 0.40  # at no more than this share of its cost


def config(
    fast_url: str,
    deliberate_url: str,
    port: int,
    state: Path,
    adaptive: dict[str, object],
    cascade: dict[str, object],
) -> dict[str, object]:
    efforts = {**EFFORTS, "xhigh": {**EFFORTS["xhigh"], **adaptive}}
    return {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "auth": {"mode": "disabled"},
        "pricing": {"book": str(ROOT / "gateway" / "prices.yaml")},
        "database": {"url": f"sqlite:///{state / 'bench.sqlite3'}"},
        "ledger": {"journal_dir": str(state / "journal"), "fsync": False},
        "pools": {"fast": {"replicas": [fast_url]}, "deliberate": {"replicas": [deliberate_url]}},
        "models": {
            "qwen3-8b": {
                "tiers": {
                    "fast": {"pool": "fast"},
                    "deliberate": {"pool": "deliberate", "deliberation": {"efforts": efforts}},
                },
                "cascade": cascade,
            },
            "llama-3.1-8b": {"tiers": {"fast": {"pool": "fast"}}},
            "qwen3-32b": {"tiers": {"deliberate": {"pool": "deliberate"}}},
        },
    }


async def measure(
    url: str, tasks: int, difficulty: int, concurrency: int, samples: int
) -> tuple[list[ProbeResult], list[tuple[float, bool]]]:
    """The probe results (fast, deliberate at each level, auto, cascade at high effort) and, per task, the
    cascade's confidence in the fast tier's k samples with whether the sample it would deliver is right."""
    probe_set = builtin_tasks(tasks, seed=11, difficulty=difficulty)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        results = [await run_probe(client, "qwen3-8b", "fast", probe_set, concurrency=concurrency)]
        for effort in EFFORTS:
            results.append(
                await run_probe(
                    client, "qwen3-8b", "deliberate", probe_set, effort=effort, concurrency=concurrency
                )
            )
        results.append(await run_probe(client, "qwen3-8b", "auto", probe_set, concurrency=concurrency))
        for effort in ("high", "xhigh"):  # escalating to the fixed 5-sample vote, and to the adaptive one
            results.append(
                await run_probe(
                    client, "qwen3-8b", "cascade", probe_set, effort=effort, concurrency=concurrency
                )
            )
        gate = asyncio.Semaphore(concurrency)
        scored = await asyncio.gather(*(fast_confidence(client, gate, task, samples) for task in probe_set))
    return results, scored


async def fast_confidence(
    client: httpx.AsyncClient, gate: asyncio.Semaphore, task: ProbeTask, samples: int
) -> tuple[float, bool]:
    """The cascade's confidence in the fast tier's answer to `task`, and whether that answer is right."""
    body = {
        "model": "qwen3-8b:fast",
        "messages": [{"role": "user", "content": task.question + "\nEnd your reply with 'The answer is N.'"}],
        "n": samples,
        "logprobs": True,
    }
    async with gate:
        reply = (await client.post("/v1/chat/completions", json=body)).json()
    choices = reply["choices"]
    confidence = score_samples(choices, structured=False)
    content = choices[confidence.chosen]["message"]["content"] or ""
    return confidence.score, extract_answer(content) == extract_answer(task.answer)


def auroc(scored: list[tuple[float, bool]]) -> float:
    """The chance that a right answer's confidence is above a wrong one's (ties count half)."""
    right = [score for score, correct in scored if correct]
    wrong = [score for score, correct in scored if not correct]
    if not right or not wrong:
        return float("nan")
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--difficulty", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--wave", type=int, default=2, help="the adaptive level's samples per wave")
    parser.add_argument("--stop-confidence", type=float, default=0.95, help="the adaptive level's")
    parser.add_argument("--threshold", type=float, default=0.5, help="the cascade's confidence threshold")
    parser.add_argument("--cascade-samples", type=int, default=3, help="the cascade's fast samples (k)")
    parser.add_argument("--logprob-noise", type=float, help="the simulator's (default: its own, 1.0)")
    parser.add_argument(
        "--fast-skill", type=float, help="the fast engine's skill_base (default: the simulator's, 0.35)"
    )
    args = parser.parse_args()
    tiergate = [sys.executable, "-m", "gateway"]
    with tempfile.TemporaryDirectory(prefix="tiergate-bench-") as temp:
        state = Path(temp)
        fast_port, deliberate_port, port = free_port(), free_port(), free_port()
        simulate = [*tiergate, "simulate", "--zero-latency", "--model", "qwen3-8b", "--model", "llama-3.1-8b"]
        if args.logprob_noise is not None:
            simulate += ["--logprob-noise", str(args.logprob_noise)]
        fast_only = ["--skill-base", str(args.fast_skill)] if args.fast_skill is not None else []
        with (
            managed(
                "fast",
                [*simulate, "--profile", "fast", "--port", str(fast_port), *fast_only],
                base_url=f"http://127.0.0.1:{fast_port}",
                log_path=state / "fast.log",
            ) as fast,
            managed(
                "deliberate",
                [
                    *simulate,
                    "--profile",
                    "deliberate",
                    "--port",
                    str(deliberate_port),
                    "--model",
                    "qwen3-32b",
                ],
                base_url=f"http://127.0.0.1:{deliberate_port}",
                log_path=state / "deliberate.log",
            ) as deliberate,
        ):
            fast.wait_ready("/health", 30)
            deliberate.wait_ready("/health", 30)
            config_path = state / "tiergate.yaml"
            level = {"wave": args.wave, "stop_confidence": args.stop_confidence}
            cascade = {"threshold": args.threshold, "samples": args.cascade_samples}
            settings = config(fast.base_url, deliberate.base_url, port, state, level, cascade)
            config_path.write_text(yaml.safe_dump(settings))
            with managed(
                "gateway",
                [*tiergate, "serve", "--config", str(config_path)],
                base_url=f"http://127.0.0.1:{port}",
                log_path=state / "gateway.log",
            ) as gateway:
                gateway.wait_ready("/readyz", 60)
                results, scored = asyncio.run(
                    measure(
                        gateway.base_url, args.tasks, args.difficulty, args.concurrency, args.cascade_samples
                    )
                )
    if args.json:
        print(orjson.dumps([r.to_dict() for r in results], option=orjson.OPT_INDENT_2).decode())
        return
    print(table(results))
    print()
    print(samples_table(results))
    by_effort = {r.effort: r for r in results if r.tier == "deliberate"}
    high, adaptive = by_effort["high"], by_effort["xhigh"]
    fast_accuracy, high_accuracy = results[0].accuracy or 0.0, high.accuracy or 0.0
    adaptive_accuracy = adaptive.accuracy or 0.0
    answered = all(r.answered == r.tasks for r in results)  # accuracy over a few answers proves nothing
    verdict = "PASS" if answered and high_accuracy >= fast_accuracy + 0.2 else "FAIL"
    print(f"{verdict}  deliberate/high {high_accuracy:.1%} vs fast {fast_accuracy:.1%} ({args.tasks} tasks)")
    saving = 1 - adaptive.mean_samples / high.mean_samples if high.mean_samples else 0.0
    kept = adaptive_accuracy >= high_accuracy - ACCURACY_SLACK - 1e-9
    verdict = "PASS" if answered and saving >= SAVING_TARGET and kept else "FAIL"
    print(
        f"{verdict}  adaptive {adaptive.mean_samples:.2f} samples vs fixed {high.mean_samples:.2f}"
        f" ({saving:.0%} fewer, target {SAVING_TARGET:.0%}), accuracy {adaptive_accuracy:.1%} vs"
        f" {high_accuracy:.1%} (at most {ACCURACY_SLACK:.0%} less)"
    )
    escalating = sum(score < args.threshold for score, _ in scored) / len(scored) if scored else 0.0
    delivered = [correct for score, correct in scored if score >= args.threshold]
    precision = sum(delivered) / len(delivered) if delivered else float("nan")
    print(
        f"AUROC {auroc(scored):.3f}  of the cascade's confidence in the fast answer against its correctness"
        f" (k={args.cascade_samples}, noise {args.logprob_noise if args.logprob_noise is not None else 1.0});"
        f" at threshold {args.threshold}: {1 - escalating:.1%} of fast answers delivered,"
        f" {precision:.1%} of them right"
    )
    for threshold in (0.3, 0.5, 0.7, 0.9):  # the fast stage's side of the frontier, threshold by threshold
        passing = [correct for score, correct in scored if score >= threshold]
        right = sum(passing) / len(passing) if passing else float("nan")
        print(
            f"  threshold {threshold}: {len(passing) / len(scored):.1%} delivered, {right:.1%} of them right"
        )
    # the cascade escalating to the fixed vote (effort high) and to the adaptive one (xhigh), each against the
    # fixed vote of deliberate/high
    for cascaded in (r for r in results if r.tier == "cascade"):
        share = (cascaded.accuracy or 0.0) / high_accuracy if high_accuracy else 0.0
        cost_share = cascaded.cost_micros / high.cost_micros if high.cost_micros else float("inf")
        verdict = "PASS" if answered and share >= CASCADE_ACCURACY and cost_share <= CASCADE_COST else "FAIL"
        escalation = "the adaptive vote" if cascaded.effort == "xhigh" else "the fixed vote"
        print(
            f"{verdict}  cascade (threshold {args.threshold}, escalating to {escalation})"
            f" {cascaded.accuracy or 0.0:.1%} = {share:.1%} of deliberate/high's accuracy"
            f" (target {CASCADE_ACCURACY:.0%}) at {cost_share:.1%} of its cost (target {CASCADE_COST:.0%})"
        )


def samples_table(results: list[ProbeResult]) -> str:
    """Samples drawn, accuracy, the share of answers whose depth floor was met (those pay deliberate prices
    and the depth premium; a missed floor is rated at fast prices) and cost, side by side (the adaptive
    level is `xhigh`)."""
    rows = [
        f"{'tier':<12}{'effort':<18}{'samples':>9}{'accuracy':>10}{'floor met':>11}"
        f"{'cost':>12}{'per right':>12}"
    ]
    for r in results:
        effort = {"high": "high (fixed 5)", "xhigh": "high (adaptive)"}.get(r.effort or "", r.effort or "-")
        if r.tier == "cascade":
            effort = {"high": "-> high (fixed 5)", "xhigh": "-> high (adaptive)"}.get(r.effort or "", "-")
        elif r.tier != "deliberate":
            effort = r.effort or "-"
        per_right = r.cost_per_correct_micros
        met = r.floors_met / r.answered if r.answered else 0.0
        rows.append(
            f"{r.tier:<12}{effort:<18}{r.mean_samples:>9.2f}{r.accuracy or 0.0:>10.1%}{met:>11.1%}"
            f"{r.cost_micros / 1e6:>12.6f}{per_right / 1e6 if per_right is not None else float('nan'):>12.6f}"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
