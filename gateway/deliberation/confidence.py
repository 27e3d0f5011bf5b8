"""The cascade tier's confidence in a fast answer: k samples of one `n=k` call, with their token logprobs,
scored by signals it can show (docs/tiers.md, "The cascade tier"):

- **answered**: whether a sample's final answer could be extracted (`vote.extract_answer`: a `\\boxed{}`, an
  "answer is" statement, a short answer), or, for structured output, whether its text parses as JSON;
- **agreement**: the share of the k samples that give the majority's answer (a sample without one agrees
  with nobody);
- **mean_logprob** / **min_logprob**: of the content tokens of the samples that give it (mean: the mean of
  each sample's mean; of every sample when none has an answer).

    confidence = agreement x exp(mean_logprob)        (0 when no sample answered)

exp(mean_logprob) is the geometric mean of the token probabilities; without logprobs (an engine that does
not return them) it counts as 1 and agreement alone scores. min_logprob is reported, not scored: one rare
token (a name, a number) sinks it whatever the answer's worth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.deliberation.vote import extract_answer, tally

__all__ = ["Confidence", "score_samples"]


@dataclass(frozen=True, slots=True)
class Confidence:
    score: float  # in [0, 1]
    chosen: int  # the sample delivered when confident: the first that gives the majority's answer
    answered: bool
    agreement: float
    mean_logprob: float | None  # None: no logprobs came back
    min_logprob: float | None

    def signals(self) -> dict[str, object]:
        return {
            "answered": self.answered,
            "agreement": round(self.agreement, 4),
            "mean_logprob": None if self.mean_logprob is None else round(self.mean_logprob, 4),
            "min_logprob": None if self.min_logprob is None else round(self.min_logprob, 4),
        }


def score_samples(choices: Sequence[dict[str, Any]], *, structured: bool) -> Confidence:
    """The confidence in the majority answer of `choices` (an engine reply's, with chat logprobs)."""
    texts = [_content(choice) for choice in choices]
    answers = [_structured(text) if structured else extract_answer(text) for text in texts]
    vote = tally(answers)
    # the samples giving the majority's answer; without one, all of them (their logprobs still reported)
    agreeing = [i for i, answer in enumerate(answers) if answer == vote.answer] or list(range(len(choices)))
    means: list[float] = []
    lowest: float | None = None
    for index in agreeing:
        logprobs = _logprobs(choices[index])
        if logprobs:
            means.append(sum(logprobs) / len(logprobs))
            low = min(logprobs)
            lowest = low if lowest is None else min(lowest, low)
    mean = sum(means) / len(means) if means else None
    if vote.answer is None:
        return Confidence(0.0, 0, False, 0.0, mean, lowest)
    certainty = math.exp(mean) if mean is not None else 1.0
    score = min(max(vote.agreement * certainty, 0.0), 1.0)
    return Confidence(score, vote.winner, True, vote.agreement, mean, lowest)


def _content(choice: dict[str, Any]) -> str:
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def _structured(text: str) -> str | None:
    """The JSON text's canonical form (keys sorted), or None when it does not parse."""
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return None


def _logprobs(choice: dict[str, Any]) -> list[float]:
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return []
    values = (entry.get("logprob") for entry in content if isinstance(entry, dict))
    return [
        float(value) for value in values if isinstance(value, int | float) and not isinstance(value, bool)
    ]
