"""Calibration by probes, the offline part (pure functions): from one run of each task through the fast
stage (the cascade's k samples, scored) and the deliberate tier (its vote's sample answers), the accuracy and
cost of every cascade threshold and every vote-stopping setting, and the cheapest reaching a target accuracy.

A threshold needs no run of its own: a task's cascade at threshold t delivers the fast answer when its
confidence is >= t and the deliberation's otherwise, so accuracy(t) and cost(t) are sums over the tasks. The
vote-stopping parameter (`stop_confidence` of adaptive self-consistency, deliberation/adaptive.py) is
replayed: a fixed vote's samples are independent draws, so every order of them is as likely as any other, and
an adaptive vote over them - `wave` at a time, stopped by the gateway's own rule (`adaptive.settled`), the
winner by its own tally - is averaged over their distinct orders. Its cost is the deliberation's cost per
sample times the samples drawn, plus its per-request fees whole. Amounts are exact (fractions of micros) until
they are shown.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import permutations

from gateway.deliberation.adaptive import keep_probability
from gateway.deliberation.vote import tally

__all__ = [
    "STOP_CONFIDENCES",
    "Calibration",
    "Choice",
    "Point",
    "TaskRecord",
    "calibrate",
    "choose",
    "frontier",
    "replay",
]

# the vote-stopping settings tried; None is the fixed vote (every sample drawn)
STOP_CONFIDENCES: tuple[float | None, ...] = (None, 0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5)
_MAX_ORDERS = 2000  # more distinct orders than this (many samples): a seeded sample of them


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task's run: its fast stage (k samples, as the cascade scores them) and its deliberation."""

    confidence: float  # the cascade's confidence in the fast stage's answer
    fast_correct: bool  # the answer the cascade would deliver (the majority's sample)
    fast_cost: Fraction  # micros of the k-sample call
    single_correct: bool  # the first sample: what the fast tier alone answers
    single_cost: Fraction  # micros of one sample
    votes: tuple[str | None, ...]  # the deliberation's sample answers, normalised (None: none)
    truth: str | None  # the task's answer, normalised as the vote normalises
    deliberate_correct: bool  # the vote the deliberation delivered
    deliberate_cost: Fraction  # micros
    deliberate_fees: Fraction = Fraction(
        0
    )  # of it, per request whatever the samples (request, depth premium)


@dataclass(frozen=True, slots=True)
class Point:
    """One setting over the whole probe set: its accuracy and its cost."""

    tier: str  # fast, deliberate or cascade
    stop: float | None  # the vote's stop_confidence (None: fixed); fast: None
    threshold: float | None  # cascade only
    accuracy: Fraction
    cost: Fraction  # micros, all tasks
    tasks: int

    @property
    def cost_micros(self) -> int:
        return round(self.cost)

    @property
    def cost_per_right_micros(self) -> int | None:
        right = self.accuracy * self.tasks
        return round(self.cost / right) if right else None

    @property
    def setting(self) -> str:
        if self.tier == "fast":
            return "-"
        vote = "fixed vote" if self.stop is None else f"stop {self.stop:g}"
        return vote if self.threshold is None else f"threshold {self.threshold:.4f}, {vote}"


@dataclass(frozen=True, slots=True)
class Choice:
    point: Point
    met: bool  # reaches the target; else the most accurate setting of those tried


@dataclass(frozen=True, slots=True)
class Calibration:
    points: list[Point]
    deliberate: Choice
    cascade: Choice | None  # None: the model offers no cascade


Settled = dict[tuple[str | None, ...], Fraction]


def replay(
    votes: Sequence[str | None],
    truth: str | None,
    cost: Fraction,
    wave: int,
    stop: float,
    known: Settled | None = None,
    fees: Fraction = Fraction(0),
) -> tuple[Fraction, Fraction]:
    """(the chance the adaptive vote is right, its expected cost) over the distinct orders of `votes`, the
    samples of a full vote (their number is the level's most) that cost `cost`, of which `fees` per request.
    `known` keeps the keep-probabilities of the votes so far (`adaptive.keep_probability`) between calls over
    the same samples."""
    most = len(votes)
    if most == 0:
        return Fraction(0), cost
    known = {} if known is None else known
    goal = Fraction(str(stop))

    def settled(drawn: tuple[str | None, ...]) -> bool:  # adaptive.settled, its probabilities kept
        if len(drawn) >= most:
            return True
        if drawn not in known:
            known[drawn] = keep_probability(drawn, most - len(drawn))
        return known[drawn] >= goal

    orders = _orders(tuple(votes))
    right, drawn_total = 0, 0
    for order in orders:
        drawn = min(wave, most)
        while not settled(order[:drawn]):
            drawn = min(drawn + wave, most)
        right += truth is not None and tally(order[:drawn]).answer == truth
        drawn_total += drawn
    return Fraction(right, len(orders)), fees + (cost - fees) * Fraction(drawn_total, len(orders) * most)


def _orders(votes: tuple[str | None, ...]) -> list[tuple[str | None, ...]]:
    if len(votes) <= 8:
        return sorted(set(permutations(votes)), key=repr)  # sorted: the same replay every time
    rng = random.Random(0)
    shuffled = []
    for _ in range(_MAX_ORDERS):
        order = list(votes)
        rng.shuffle(order)
        shuffled.append(tuple(order))
    return shuffled


def calibrate(
    records: Sequence[TaskRecord],
    target: float,
    *,
    wave: int = 2,
    stops: Sequence[float | None] = STOP_CONFIDENCES,
    cascade: bool = True,
) -> Calibration:
    """Every setting's point, and the cheapest reaching `target`: the vote-stopping setting of the deliberate
    tier alone, then the cascade's threshold and vote together. The cascade's vote is one the deliberate tier
    reaches the target with too (when one does: the setting is the tier's); its threshold the cheapest."""
    if not records:
        raise ValueError("no tasks to calibrate on")
    n = len(records)
    per_stop: dict[float | None, list[tuple[Fraction, Fraction]]] = {}
    known: list[Settled] = [{} for _ in records]  # each task's keep-probabilities, shared by the stops
    for stop in stops:
        if stop is None:
            per_stop[stop] = [(Fraction(int(r.deliberate_correct)), r.deliberate_cost) for r in records]
        else:
            per_stop[stop] = [
                replay(r.votes, r.truth, r.deliberate_cost, wave, stop, kept, r.deliberate_fees)
                for r, kept in zip(records, known, strict=True)
            ]
    fast = Point(
        "fast",
        None,
        None,
        Fraction(sum(r.single_correct for r in records), n),
        sum((r.single_cost for r in records), Fraction(0)),
        n,
    )
    deliberate = [
        Point(
            "deliberate",
            stop,
            None,
            sum((a for a, _ in runs), Fraction(0)) / n,
            sum((c for _, c in runs), Fraction(0)),
            n,
        )
        for stop, runs in per_stop.items()
    ]
    chosen_vote = choose(deliberate, target)
    points = [fast, *deliberate]
    if not cascade:
        return Calibration(points, chosen_vote, None)
    thresholds = sorted({0.0, 1.0, *(r.confidence for r in records)})
    cascades = []
    for stop, runs in per_stop.items():
        for threshold in thresholds:
            accuracy, cost = Fraction(0), Fraction(0)
            for record, (right, spent) in zip(records, runs, strict=True):
                cost += record.fast_cost
                if record.confidence >= threshold:
                    accuracy += record.fast_correct
                else:
                    accuracy += right
                    cost += spent
            cascades.append(Point("cascade", stop, threshold, accuracy / n, cost, n))
    points.extend(cascades)
    if chosen_vote.met:
        allowed = {p.stop for p in deliberate if p.accuracy >= Fraction(str(target))}
    else:
        allowed = {chosen_vote.point.stop}
    return Calibration(points, chosen_vote, choose([p for p in cascades if p.stop in allowed], target))


def choose(points: Sequence[Point], target: float) -> Choice:
    """The cheapest point at or above `target` accuracy (equal costs: the more accurate, then the more
    cautious: the higher threshold and stop_confidence, a fixed vote highest); when none reaches it, the most
    accurate (equal accuracies: the cheaper, then the more cautious)."""
    if not points:
        raise ValueError("no settings to choose from")
    goal = Fraction(str(target))
    meeting = [p for p in points if p.accuracy >= goal]
    if meeting:
        return Choice(min(meeting, key=lambda p: (p.cost, -p.accuracy, *_caution(p))), True)
    return Choice(min(points, key=lambda p: (-p.accuracy, p.cost, *_caution(p))), False)


def _caution(point: Point) -> tuple[float, float]:
    """Sort keys, the more cautious first: a higher threshold escalates more; a fixed vote draws all."""
    stop = 2.0 if point.stop is None else point.stop
    return -(point.threshold or 0.0), -stop


def frontier(points: Sequence[Point]) -> list[Point]:
    """The points no other beats: none is at least as accurate for less, or more accurate for as much;
    cheapest first."""
    ordered = sorted(points, key=lambda p: (p.cost, -p.accuracy))
    best: list[Point] = []
    for point in ordered:
        if not best or point.accuracy > best[-1].accuracy:
            best.append(point)
    return best
