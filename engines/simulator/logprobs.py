"""Pseudo log-probabilities of the generated tokens, in vLLM's shapes for chat and text completions.

The model always samples its most likely token, so each token comes first in its top_logprobs (as vLLM
reports the sampled token first) and the list is sorted. The chosen token's logprob is `mean` times an
Exp(1) draw: most tokens near 0, a few far below, averaging `mean` (config.logprob_mean, or the
`logprob-mean` item of the x-sim-fault header), so a request's confidence can be set high or low. The
alternatives share what probability is left, geometrically, each below the chosen one. All of it is drawn
from the choice's seed: the same request gets the same values, and a lower max_tokens a prefix of them.
A task's answer tokens take their own mean (`content`), which the planner makes tell of its correctness.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from engines.simulator.text import WORDS

__all__ = ["TokenLogprobs"]

_ALTERNATIVES = (*(" " + word for word in WORDS), ",", ".", ":", "\n")
_FLOOR = -9999.0  # vLLM's floor for a logprob (it stands in for -inf)


class TokenLogprobs:
    """The logprobs of one choice's tokens. `top` is what the request asked: top_logprobs (chat) or
    logprobs (completions); each token holds max(top - 1, 0) alternatives besides itself."""

    __slots__ = ("_offsets", "alternatives", "logprobs", "tokens", "top")

    def __init__(
        self,
        tokens: Sequence[str],
        top: int,
        mean: float,
        seed: int,
        content: tuple[int, float | None] = (0, None),
    ) -> None:
        """`content`: (the index of the first content token, the mean of the content tokens' logprobs, when
        it is not `mean`)."""
        self.tokens = list(tokens)
        self.top = top
        self.logprobs: list[float] = []
        self.alternatives: list[list[tuple[str, float]]] = []
        self._offsets: list[int] | None = None
        rng = random.Random(seed)
        wanted = max(top - 1, 0)
        start, content_mean = content
        for i, token in enumerate(self.tokens):
            scale = content_mean if content_mean is not None and i >= start else mean
            logprob = max(scale * -math.log(1.0 - rng.random()), _FLOOR)
            self.logprobs.append(logprob)
            if not wanted:
                self.alternatives.append([])
                continue
            # Alternative i gets left * q * (1 - q)**i of the probability left: together less than
            # what is left, the first below the chosen token's (in log space: no underflow).
            log_left = math.log(max(-math.expm1(logprob), 1e-300))
            log_q = min(math.log(0.3 + 0.4 * rng.random()), logprob - log_left - 1e-9)
            log_rest = math.log1p(-math.exp(log_q))
            words = [w for w in rng.sample(_ALTERNATIVES, wanted + 1) if w != token][:wanted]
            self.alternatives.append(
                [(w, max(log_left + log_q + i * log_rest, _FLOOR)) for i, w in enumerate(words)]
            )

    def chat(self, start: int, end: int) -> dict[str, Any]:
        """vLLM's ChatCompletionLogProbs for tokens [start, end): {"content": [...]}, where each entry's
        top_logprobs holds `top` tokens, the chosen one first (none for top_logprobs 0)."""
        content = []
        for i in range(start, min(end, len(self.tokens))):
            token, logprob = self.tokens[i], self.logprobs[i]
            top = [_chat_entry(token, logprob)] if self.top else []
            top += [_chat_entry(w, lp) for w, lp in self.alternatives[i]]
            content.append({**_chat_entry(token, logprob), "top_logprobs": top})
        return {"content": content}

    def completion(self, start: int, end: int) -> dict[str, Any]:
        """vLLM's CompletionLogProbs for tokens [start, end): offsets into the generated text, and per
        token a {token: logprob} of max(top, 1) entries, the chosen one first."""
        if self._offsets is None:
            self._offsets = [0, *accumulate(map(len, self.tokens))]
        end = min(end, len(self.tokens))
        return {
            "text_offset": self._offsets[start:end],
            "token_logprobs": self.logprobs[start:end],
            "tokens": self.tokens[start:end],
            "top_logprobs": [
                {self.tokens[i]: self.logprobs[i], **dict(self.alternatives[i])} for i in range(start, end)
            ],
        }


def _chat_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8", errors="replace"))}
