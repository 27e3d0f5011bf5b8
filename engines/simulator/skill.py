"""The skill model: how likely a choice answers a task right, given how long it reasoned, and what it
answers. Everything is decided from the planner's per-choice draws, so it is deterministic."""

from __future__ import annotations

import math
import re

from engines.simulator.arithmetic import TaskMarker
from engines.simulator.config import SimulatorConfig

__all__ = ["ANSWER_SENTENCE", "answer_pieces", "chosen_answer", "p_correct"]

ANSWER_SENTENCE = "The answer is {}."  # the last sentence of every answer to a task
_UNIT = 1.0 / (1 << 64)
_TOKEN_PIECES = re.compile(r"\s*(?:\w{1,6}|[^\w\s])")  # the tokenizer's pieces, with their whitespace
_LEADS = tuple(
    tuple(_TOKEN_PIECES.findall(" " + lead))
    for lead in (
        "Putting it all together.",
        "Working through each step in order.",
        "Adding it all up.",
        "Checking the arithmetic once more.",
        "Following the story step by step.",
        "So, after every change.",
    )
)


def unit(draw: int) -> float:
    """A 64-bit draw as a number in [0, 1)."""
    return (draw & 0xFFFFFFFFFFFFFFFF) * _UNIT


def p_correct(config: SimulatorConfig, reasoning_tokens: int) -> float:
    """skill_max - (skill_max - skill_base) * exp(-reasoning_tokens / skill_scale_tokens)."""
    gap = config.skill_max - config.skill_base
    return config.skill_max - gap * math.exp(-max(reasoning_tokens, 0) / config.skill_scale_tokens)


def chosen_answer(
    config: SimulatorConfig, task: TaskMarker, reasoning_tokens: int, skill_draw: int, wrong_draw: int
) -> int:
    """The answer a choice gives: right with probability p_correct; when wrong, the task's tempting
    wrong value with probability skill_tempting_rate, else the right one off by a nonzero offset
    (1 to max(9, 10% of it), either way; never below 0 when the right answer is not)."""
    right = task.answer
    if unit(skill_draw) < p_correct(config, reasoning_tokens):
        return right
    if (wrong_draw & 0xFFFFFFFF) / (1 << 32) < config.skill_tempting_rate:
        return task.tempting
    high = wrong_draw >> 32
    magnitude = 1 + (high >> 1) % max(9, abs(right) // 10)
    wrong = right - magnitude if high & 1 else right + magnitude
    return right + magnitude if right >= 0 > wrong else wrong


def answer_pieces(answer: int, lead_draw: int) -> list[str]:
    """A short answer as token pieces (each with its leading whitespace), ending in the sentence
    `The answer is <answer>.`; its first piece starts with a space, as a continuation needs."""
    lead = _LEADS[lead_draw % len(_LEADS)]
    return [*lead, *_TOKEN_PIECES.findall(" " + ANSWER_SENTENCE.format(answer))]
