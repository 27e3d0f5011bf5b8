"""Adaptive self-consistency's stopping rule (after Aggarwal et al. 2023, "Let's Sample Step by Step:
Adaptive-Consistency for Efficient Reasoning with LLMs", their Beta criterion): stop drawing samples once
the samples still allowed could change the vote's winner only with a small probability.

The vote so far has a leader with `a` votes. Each other answer given (`b` votes) challenges it, and so does
an answer not given yet (`b = 0`). As in the paper's Beta criterion, a leader and a challenger are compared
alone: the challenger's share of the votes between them has a Beta(b + 1, a + 1) posterior (a uniform
prior); with `r` samples left before the level's maximum, each counted as a vote for one of the two (the
most that could go against the leader), the challenger's votes among them are Beta-binomial(r, b + 1,
a + 1), and it takes the vote when it ends with more votes than the leader - or as many, when it was given
first (ties go to the answer given first, as `vote.tally` breaks them). The chances of all challengers are
added (a union bound: never less than the chance that any of them takes the vote), and the rule stops when

    P(the leader still wins after all r samples) = 1 - sum of the challengers' chances >= stop_confidence

computed exactly (rational arithmetic), so the decision is deterministic. Samples without an answer are set
aside. When every challenger is out of reach (`a - b > r`, or `= r` with the leader first) the probability
is 1: the margin rule is its special case. Worked values for a level of 5 samples: [A, A] -> 0.95 (stops at
the default 0.95); [A] -> 0.8; [A, B] -> 0.4; [B, A, A] -> 0.8; [A, B, A, A] -> 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from math import comb, factorial

from gateway.deliberation.vote import ranking

__all__ = ["keep_probability", "settled"]


def settled(answers: Sequence[str | None], most: int, confidence: float) -> bool:
    """Whether the vote over `answers` (normalised, in sample order; None: no answer) is settled: no sample
    is left before `most`, or its winner keeps the vote with at least `confidence`."""
    left = most - len(answers)
    if left <= 0:
        return True
    return keep_probability(answers, left) >= Fraction(str(confidence))


def keep_probability(answers: Sequence[str | None], left: int) -> Fraction:
    """The probability that the leader of `answers` is still the vote's winner after `left` more samples
    (see the module's doc); 0 when no sample has an answer yet."""
    votes, first, ranked = ranking(answers)
    if not ranked:
        return Fraction(0) if left > 0 else Fraction(1)
    leader = ranked[0]
    # every other answer given challenges the leader, and so does one not given yet (0 votes, after it)
    challengers = [(votes[other], first[other] < first[leader]) for other in ranked[1:]] + [(0, False)]
    flip = sum((_overtakes(votes[leader], b, wins_ties, left) for b, wins_ties in challengers), Fraction(0))
    return max(Fraction(0), 1 - flip)


def _overtakes(a: int, b: int, wins_ties: bool, left: int) -> Fraction:
    """The chance that a challenger with `b` votes ends ahead of a leader with `a` after `left` samples,
    each a vote for one of the two; the challenger's share has a Beta(b + 1, a + 1) posterior."""
    chance = Fraction(0)
    for k in range(left + 1):  # k: the challenger's votes among the samples left
        leader, challenger = a + left - k, b + k
        if challenger > leader or (challenger == leader and wins_ties):
            chance += _beta_binomial(k, left, b + 1, a + 1)
    return chance


def _beta_binomial(k: int, n: int, alpha: int, beta: int) -> Fraction:
    """P(K = k) for K ~ Beta-binomial(n, alpha, beta): C(n, k) B(k + alpha, n - k + beta) / B(alpha, beta)."""
    return comb(n, k) * _beta(k + alpha, n - k + beta) / _beta(alpha, beta)


def _beta(x: int, y: int) -> Fraction:
    """The Beta function at positive integers: (x - 1)! (y - 1)! / (x + y - 1)!."""
    return Fraction(factorial(x - 1) * factorial(y - 1), factorial(x + y - 1))
