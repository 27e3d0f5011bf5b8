"""The cascade's confidence: agreement of the k samples times the geometric mean of their token probabilities;
0 without an answer; structured output compared as JSON."""

from __future__ import annotations

import math
from typing import Any

import pytest

from gateway.deliberation.confidence import score_samples


def choice(content: str, *logprobs: float) -> dict[str, Any]:
    entries = [{"token": "t", "logprob": value} for value in logprobs]
    return {"message": {"content": content}, "logprobs": {"content": entries} if logprobs else None}


def test_agreeing_sure_samples_score_high() -> None:
    scored = score_samples([choice("The answer is 5.", -0.1, -0.1)] * 3, structured=False)
    assert scored.score == pytest.approx(math.exp(-0.1))
    assert scored.agreement == 1.0 and scored.answered and scored.min_logprob == -0.1


def test_disagreement_and_unsure_tokens_lower_it() -> None:
    samples = [
        choice("Adding up. The answer is 7.", -1.0, -3.0),
        choice("The answer is 5.", -0.2, -0.2),
        choice("So the answer is 7.", -1.0, -1.0),
    ]
    scored = score_samples(samples, structured=False)
    assert scored.chosen == 0  # the first sample giving the majority's answer
    assert scored.agreement == pytest.approx(2 / 3)
    assert scored.mean_logprob == pytest.approx((-2.0 - 1.0) / 2)
    assert scored.score == pytest.approx(2 / 3 * math.exp(-1.5))
    assert scored.min_logprob == -3.0


def test_no_answer_scores_zero() -> None:
    long = "word " * 40
    scored = score_samples([choice(long, -0.01), choice(long, -0.01)], structured=False)
    assert (scored.score, scored.answered) == (0.0, False)
    assert scored.mean_logprob == pytest.approx(-0.01)  # still reported


def test_without_logprobs_agreement_alone_scores() -> None:
    scored = score_samples([choice("The answer is 5."), choice("The answer is 5.")], structured=False)
    assert scored.score == 1.0 and scored.mean_logprob is None


def test_structured_output_must_parse_and_agrees_as_json() -> None:
    samples = [choice('{"a": 1, "b": 2}', -0.1), choice('{"b": 2, "a": 1}', -0.1), choice("{not json", -0.1)]
    scored = score_samples(samples, structured=True)
    assert scored.agreement == pytest.approx(2 / 3) and scored.answered
    assert score_samples([choice("{not json", -0.1)], structured=True).score == 0.0
