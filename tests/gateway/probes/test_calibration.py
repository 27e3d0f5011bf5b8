"""Calibration's offline sweep (gateway/probes/calibration.py), pure: the replay of an adaptive vote, the
cheapest setting reaching a target (none reaching it, ties), the frontier."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations, product

import pytest

from gateway.probes.calibration import Point, TaskRecord, calibrate, choose, frontier, replay


def record(
    confidence: float,
    fast_correct: bool,
    *,
    votes: tuple[str | None, ...] = ("7",) * 5,
    deliberate_correct: bool = True,
    fast_cost: int = 10,
    deliberate_cost: int = 100,
) -> TaskRecord:
    return TaskRecord(
        confidence=confidence,
        fast_correct=fast_correct,
        fast_cost=Fraction(fast_cost),
        single_correct=fast_correct,
        single_cost=Fraction(fast_cost, 3),
        votes=votes,
        truth="7",
        deliberate_correct=deliberate_correct,
        deliberate_cost=Fraction(deliberate_cost),
    )


def test_a_unanimous_vote_stops_after_its_first_wave_at_the_default() -> None:
    # [A, A] of 5 keeps the vote with 0.95 (adaptive.py's worked value): two samples of five paid for
    assert replay(("7",) * 5, "7", Fraction(100), 2, 0.95) == (Fraction(1), Fraction(40))
    # stricter: [A, A, A, A] leaves one sample, out of reach: four of five
    assert replay(("7",) * 5, "7", Fraction(100), 2, 0.99) == (Fraction(1), Fraction(80))
    # a per-request fee is paid whole, whatever the samples drawn: 50 + 50 x 2/5
    assert replay(("7",) * 5, "7", Fraction(100), 2, 0.95, fees=Fraction(50)) == (Fraction(1), Fraction(70))


def test_a_replay_averages_over_every_order_of_the_samples() -> None:
    votes = ("7", "7", "7", "3", "3")
    # a wave of all five: every order draws them all, and the vote is the fixed one's
    assert replay(votes, "7", Fraction(100), 5, 0.5) == (Fraction(1), Fraction(100))
    right, cost = replay(votes, "7", Fraction(100), 1, 0.8)
    # one at a time, stopped early on some orders: some cheaper, some wrong (a [3, 3, ...] start)
    assert 0 < right < 1 and 0 < cost < 100
    # samples without an answer never win
    assert replay((None,) * 3, "7", Fraction(30), 1, 0.9) == (Fraction(0), Fraction(30))


def test_the_cheapest_threshold_that_reaches_the_target() -> None:
    records = [record(0.9, True), record(0.8, True), record(0.6, False), record(0.3, False)]

    def chosen(target: float) -> tuple[float | None, bool]:
        result = calibrate(records, target, stops=(None,))
        assert result.cascade is not None
        return result.cascade.point.threshold, result.cascade.met

    # all right: the two unsure wrong answers must escalate, the two sure right ones need not
    assert chosen(1.0) == (0.8, True)
    assert chosen(0.75) == (0.6, True)  # one wrong fast answer delivered: 3 of 4
    # 0.3 and 0.0 deliver every fast answer at the same cost and accuracy: the higher threshold, cautious
    assert chosen(0.5) == (0.3, True)
    cheapest = calibrate(records, 0.5, stops=(None,)).cascade
    assert cheapest is not None and cheapest.point.cost == 40 and cheapest.point.accuracy == Fraction(1, 2)


def test_when_no_setting_reaches_the_target_the_most_accurate_is_chosen() -> None:
    records = [record(0.9, True), record(0.2, False, deliberate_correct=False, votes=("3",) * 5)]
    result = calibrate(records, 0.9, stops=(None, 0.95))
    assert not result.deliberate.met and not (result.cascade and result.cascade.met)
    assert result.deliberate.point.accuracy == Fraction(1, 2)
    # of the equally accurate votes the cheaper: the adaptive one (two samples of five)
    assert result.deliberate.point.stop == 0.95 and result.deliberate.point.cost == 80
    assert result.cascade is not None and result.cascade.point.accuracy == Fraction(1, 2)
    assert result.cascade.point.stop == 0.95  # the deliberate tier's setting, the cascade's vote too


def test_equally_cheap_vote_settings_choose_the_most_cautious() -> None:
    # unanimous votes: every stop_confidence up to 0.95 stops after two samples, 0.99 after four
    result = calibrate([record(0.5, True)] * 3, 0.9, cascade=False)
    assert result.cascade is None and result.deliberate.met
    assert result.deliberate.point.stop == 0.95
    assert result.deliberate.point.cost == 3 * 40


def test_without_a_cascade_only_the_fast_tier_and_the_votes_are_points() -> None:
    result = calibrate([record(0.5, True)], 0.9, stops=(None, 0.9), cascade=False)
    assert [(p.tier, p.stop) for p in result.points] == [
        ("fast", None),
        ("deliberate", None),
        ("deliberate", 0.9),
    ]
    with pytest.raises(ValueError):
        calibrate([], 0.9)


GRID = [Fraction(a, 4) for a in range(5)]


def point(accuracy: Fraction, cost: int, threshold: float = 0.5) -> Point:
    return Point("cascade", None, threshold, accuracy, Fraction(cost), 4)


@pytest.mark.parametrize("target", [0.0, 0.5, 0.75, 1.0])
def test_choose_against_its_definition_on_every_small_set(target: float) -> None:
    candidates = [point(a, c) for a, c in product(GRID, (1, 2, 3))]
    for size in (1, 2, 3):
        for points in combinations(candidates, size):
            choice = choose(points, target)
            meeting = [p for p in points if p.accuracy >= Fraction(str(target))]
            assert choice.met == bool(meeting)
            if meeting:
                cheapest = min(p.cost for p in meeting)
                assert choice.point.cost == cheapest
                assert choice.point.accuracy == max(p.accuracy for p in meeting if p.cost == cheapest)
            else:
                best = max(p.accuracy for p in points)
                assert choice.point.accuracy == best
                assert choice.point.cost == min(p.cost for p in points if p.accuracy == best)


def test_ties_in_cost_and_accuracy_go_to_the_higher_threshold_then_the_fixed_vote() -> None:
    same = [point(Fraction(1), 5, 0.2), point(Fraction(1), 5, 0.7), point(Fraction(1), 5, 0.4)]
    assert choose(same, 0.9).point.threshold == 0.7
    votes = [Point("deliberate", stop, None, Fraction(1), Fraction(5), 4) for stop in (0.9, None, 0.95)]
    assert choose(votes, 0.9).point.stop is None


def test_the_frontier_keeps_what_nothing_beats() -> None:
    for points in combinations([point(a, c) for a, c in product(GRID, (1, 2, 3))], 3):
        kept = frontier(points)
        for p in points:
            beaten = any(
                (q.accuracy >= p.accuracy and q.cost < p.cost)
                or (q.accuracy > p.accuracy and q.cost <= p.cost)
                for q in points
            )
            assert (p in kept) == (not beaten)
        assert [p.cost for p in kept] == sorted(p.cost for p in kept)
