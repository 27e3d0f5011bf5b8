"""What each choice of a request will generate, decided up front and deterministically: reasoning
and content tokens, why it finishes, and how many tokens each engine step emits (speculative
decoding emits 1 + accepted draft tokens per step). A prompt with a task is answered by the skill
model (engines/simulator/skill.py), right or wrong depending on how long the choice reasoned. A plain
model told to think writes its reasoning in its content, between `<think>` and `</think>`. A request that
constrains the output (tools, structured output) has its content written by a Writer instead
(engines/simulator/constrained.py); with `logprobs`, every token gets its logprobs."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from engines.simulator.config import SimulatorConfig
from engines.simulator.constrained import ToolOutput, Writer
from engines.simulator.logprobs import TokenLogprobs
from engines.simulator.skill import answer_pieces, chosen_answer, unit
from engines.simulator.text import TextSource
from engines.simulator.tokenizer import THINK_CLOSE, THINK_OPEN, Prompt, Tokenizer

__all__ = ["ChoicePlan", "InlineThinking", "Planner", "Sampling"]

_DRAWS = 5  # independent 64-bit draws per choice, cut from one hash of the request
_EXTRA_DRAWS = 4  # more of them, hashed from those only when needed (early stopping, the skill model)
_MASK = (1 << 64) - 1

# Where a plain model's reasoning goes: nowhere special (a reasoning parser or none at all), or into its
# content, opening `<think>` first ("open") or going on inside one the continued message left open.
InlineThinking = Literal["no", "open", "inside"]
# The delimiters as the tokenizer's pieces, so re-tokenizing the content gives back completion_tokens.
_THINK_OPEN = tuple(Tokenizer().tokenize(THINK_OPEN))  # "<", "think", ">"
_THINK_CLOSE = tuple(Tokenizer().tokenize(THINK_CLOSE))  # "<", "/", "think", ">"
_AFTER_THINK = "\n\n"  # before the answer's first piece (whitespace belongs to the next token)


@dataclass(frozen=True, slots=True)
class Sampling:
    """The request's say in what is generated."""

    cap: int  # max tokens of this choice (max_tokens, or what is left of the context)
    n: int = 1
    seed: int | None = None
    reasoning: bool = False  # whether this request thinks first (config, template kwargs, continuation)
    thinking_budget: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    fresh_start: bool = True  # a new message: no leading space on the first piece
    inline_thinking: InlineThinking = "no"  # with reasoning: it goes into the content, within <think>
    writer: Writer | None = None  # what writes the content instead of free text (a tool call, JSON)
    logprobs: int | None = None  # top logprobs per token (chat top_logprobs, completions logprobs)
    logprob_mean: float = -0.3  # the mean logprob of a chosen token
    logprob_noise: float = 1.0  # how little a task answer's logprobs tell of its correctness


@dataclass(slots=True)
class ChoicePlan:
    index: int
    reasoning: list[str]  # one piece per reasoning token
    content: list[str]  # one piece per content token; a stop string may have cut the last ones short
    finish_reason: str  # "stop" | "length"
    stop_reason: str | None  # the stop string that ended it, as vLLM reports it
    steps: list[int]  # tokens emitted per engine step; sums to the choice's completion tokens
    tool: ToolOutput | None = None  # the content is this tool-call text, to be parsed into calls
    logprobs: TokenLogprobs | None = None  # of the reasoning tokens, then the content's

    @property
    def tokens(self) -> int:
        return len(self.reasoning) + len(self.content)


class Planner:
    __slots__ = ("_acceptance", "_config", "_text", "_tokenizer")

    def __init__(self, config: SimulatorConfig, text: TextSource) -> None:
        self._config = config
        self._text = text
        self._tokenizer = Tokenizer()
        # Accepted draft tokens per step, drawn once: each draft token is accepted with probability
        # acceptance_rate, so accepted / draft tokens converges to it as in vLLM's metrics.
        rng = random.Random(config.seed ^ 0x5EED)
        k, rate = config.num_speculative_tokens, config.acceptance_rate
        self._acceptance = tuple(sum(rng.random() < rate for _ in range(k)) for _ in range(4096)) if k else ()

    def plan(self, prompt: Prompt, model: str, sampling: Sampling, first_index: int = 0) -> list[ChoicePlan]:
        request = hashlib.blake2b(
            f"{self._config.seed}\x00{model}\x00{sampling.seed}\x00".encode(), digest_size=_DRAWS * 8
        )
        request.update(prompt.key())
        # What a constrained choice writes is the request's (its n choices agree), but for a share of them.
        shared = int.from_bytes(request.copy().digest()[:8], "little") if sampling.writer else 0
        plans = []
        for i in range(sampling.n):
            choice = request.copy()
            choice.update(i.to_bytes(4, "little"))
            plans.append(self._choice(first_index + i, choice.digest(), sampling, prompt, shared))
        return plans

    def _choice(self, index: int, digest: bytes, s: Sampling, prompt: Prompt, shared: int) -> ChoicePlan:
        """`digest` holds _DRAWS independent 64-bit numbers, lowest first."""
        draws = int.from_bytes(digest, "little")
        content_length, content_at, reasoning_length, reasoning_at, acceptance_at = (
            (draws >> (64 * k)) & _MASK for k in range(_DRAWS)
        )
        config = self._config
        task = prompt.task
        extra = 0
        if task is not None or config.short_reasoning_rate > 0:
            extra = int.from_bytes(
                hashlib.blake2b(digest, digest_size=_EXTRA_DRAWS * 8, person=b"sim-extra").digest(), "little"
            )
        short_at, skill_at, wrong_at, lead_at = ((extra >> (64 * k)) & _MASK for k in range(_EXTRA_DRAWS))
        reasoning_wanted = 0
        if s.reasoning:
            bounds = config.reasoning_tokens_range
            if unit(short_at) < config.short_reasoning_rate:
                bounds = config.short_reasoning_range  # this choice stops thinking early
            reasoning_wanted = _within(bounds, reasoning_length)
            if s.thinking_budget is not None:
                reasoning_wanted = min(reasoning_wanted, s.thinking_budget)
        inline = s.inline_thinking != "no"
        # Inline, all of the reasoning is planned and the cap cuts the whole text below.
        reasoning_tokens = reasoning_wanted if inline else min(reasoning_wanted, s.cap)
        answer: list[str] | None = None
        right: bool | None = None  # a task's answer: whether it is right (its logprobs tell, with noise)
        written = None
        if s.writer is not None:
            varies = unit(content_length) < config.structured_variation_rate
            written = s.writer.write(content_at if varies else shared)
            answer = self._tokenizer.pieces(written.text)
            content_wanted = len(answer)
        elif task is not None:
            # Reasoning carried in a continued message counts as much as the reasoning done now.
            reasoned = reasoning_tokens + prompt.carried_reasoning
            chosen = chosen_answer(config, task, reasoned, skill_at, wrong_at)
            right = chosen == task.answer
            answer = answer_pieces(chosen, lead_at)
            content_wanted = len(answer)
        else:
            content_wanted = _within(config.output_tokens_range, content_length)
        if inline:
            content, finish_reason = self._inline(
                s, reasoning_tokens, content_wanted, answer, reasoning_at, content_at
            )
            plan = self._finish(ChoicePlan(index, [], content, finish_reason, None, []), s, acceptance_at)
            if s.logprobs is not None:
                self._add_logprobs(plan, s, digest)
            return plan
        if s.ignore_eos and written is None:  # a constrained text ends where its grammar does
            content_wanted = max(s.cap - reasoning_wanted, 0)
        content_tokens = min(content_wanted, s.cap - reasoning_tokens)
        capped = s.ignore_eos or reasoning_wanted + content_wanted > s.cap
        finish_reason = "length" if capped else "stop"
        reasoning = self._pieces(reasoning_at, reasoning_tokens, s.fresh_start)
        if answer is None:
            content = self._pieces(content_at, content_tokens, s.fresh_start)
        else:
            content = _answer(answer, content_tokens, s.fresh_start, self._text, content_at)
        plan = self._finish(ChoicePlan(index, reasoning, content, finish_reason, None, []), s, acceptance_at)
        if written is not None and written.format is not None:
            plan.tool = ToolOutput.of(written, plan.content)
        if s.logprobs is not None:
            self._add_logprobs(plan, s, digest, right)
        return plan

    def _inline(
        self,
        s: Sampling,
        reasoning_tokens: int,
        content_wanted: int,
        answer: list[str] | None,
        reasoning_at: int,
        content_at: int,
    ) -> tuple[list[str], str]:
        """The content of a plain model that thinks in it: `<think>` (unless it goes on inside one),
        the reasoning, `</think>`, then `\n\n` and the answer; cut at the cap. And its finish reason."""
        text = list(_THINK_OPEN) if s.inline_thinking == "open" else []
        text += self._pieces(reasoning_at, reasoning_tokens, s.fresh_start)
        text += _THINK_CLOSE
        if s.ignore_eos:
            content_wanted = max(s.cap - len(text), 0)
        if answer is None:
            after = self._pieces(content_at, content_wanted, True)
        else:
            after = _answer(answer, content_wanted, True, self._text, content_at)
        if after:
            after[0] = _AFTER_THINK + after[0]
        text += after
        capped = s.ignore_eos or len(text) > s.cap
        return text[: s.cap], "length" if capped else "stop"

    def _finish(self, plan: ChoicePlan, s: Sampling, acceptance_at: int) -> ChoicePlan:
        """Stop strings (they cut the content) and the engine steps that emit the choice's tokens."""
        plan.stop_reason = _apply_stop(plan.content, s.stop) if s.stop else None
        if plan.stop_reason is not None:
            plan.finish_reason = "stop"
        plan.steps = self._steps(acceptance_at, plan.tokens)
        return plan

    def _add_logprobs(self, plan: ChoicePlan, s: Sampling, digest: bytes, right: bool | None = None) -> None:
        assert s.logprobs is not None
        seed = int.from_bytes(hashlib.blake2b(digest, digest_size=8, person=b"sim-logp").digest(), "little")
        content_mean = None
        if right is not None:  # a task's answer: surer when right, less when wrong, blurred by the noise
            z = (1.0 if right else -1.0) + s.logprob_noise * random.Random(seed ^ 0xC0F1DE).gauss(0.0, 1.0)
            content_mean = max(s.logprob_mean * math.exp(-z), -50.0)
        plan.logprobs = TokenLogprobs(
            plan.reasoning + plan.content,
            s.logprobs,
            s.logprob_mean,
            seed,
            content=(len(plan.reasoning), content_mean),
        )

    def _pieces(self, seed: int, count: int, fresh_start: bool) -> list[str]:
        if count <= 0:
            return []
        pieces = self._text.take(seed, count)
        if fresh_start:
            pieces[0] = pieces[0].lstrip()
        return pieces

    def _steps(self, seed: int, tokens: int) -> list[int]:
        acceptance = self._acceptance
        if not acceptance or tokens <= 1:
            return [1] * tokens
        # The prefill step yields one token; every decode step after it verifies one draft.
        steps = [1]
        left = tokens - 1
        at = seed % len(acceptance)
        while left > 0:
            size = min(1 + acceptance[at], left)
            steps.append(size)
            left -= size
            at = (at + 1) % len(acceptance)
        return steps


def _answer(answer: list[str], count: int, fresh_start: bool, text: TextSource, more_at: int) -> list[str]:
    """The first `count` pieces of an answer to a task; ignore_eos may want more, which come from the tape."""
    content = answer[:count]
    if len(content) < count:
        content += text.take(more_at, count - len(content))
    if content and fresh_start:
        content[0] = content[0].lstrip()
    return content


def _within(bounds: tuple[int, int], draw: int) -> int:
    low, high = bounds
    return low + draw % (high - low + 1)


def _apply_stop(content: list[str], stops: Sequence[str]) -> str | None:
    """Cut `content` at the first stop string, as vLLM does: generation ends with the token that
    completes the stop string, and the text is cut where the stop string begins."""
    text = "".join(content)
    found = [(at, stop) for stop in stops if (at := text.find(stop)) != -1]
    if not found:
        return None
    at, stop = min(found)
    completed = at + len(stop)
    kept: list[str] = []
    length = 0
    for piece in content:
        kept.append(piece[: max(at - length, 0)])
        length += len(piece)
        if length >= completed:
            break
    content[:] = kept
    return stop
