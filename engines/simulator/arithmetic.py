"""Checkable arithmetic word problems, so that answers of the simulated model can be scored.

Every question ends in a machine-readable line `[task: 37 + 12 * 8 - 15]`: an expression of
non-negative integers with `+`, `-`, `*` and parentheses, and the task's answer is its value. The
simulator finds the last such marker in a prompt (`find_task`) and answers with a final sentence
`The answer is <N>.` (`final_answer` reads it back), right or wrong by its skill model.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["Task", "TaskMarker", "evaluate", "final_answer", "find_marker", "find_task", "generate_tasks"]

MAX_EXPRESSION_CHARS = 200
_MARKER = re.compile(rf"\[task:([0-9+\-*()\s]{{1,{MAX_EXPRESSION_CHARS}}})\]")
_TOKEN = re.compile(r"\s*(?:(\d+)|(.))")
_FINAL = re.compile(r"The answer is (-?\d+)\.")


@dataclass(frozen=True, slots=True)
class Task:
    question: str  # a word problem whose last line is its `[task: ...]` marker
    answer: int


@dataclass(frozen=True, slots=True)
class TaskMarker:
    """What the simulator reads from a marker: the right answer and the tempting wrong one (the
    value before the last operation, as if the final step were forgotten; never the right one)."""

    answer: int
    tempting: int


# An expression tree: a number, or (operator, left, right).
_Node: TypeAlias = "int | tuple[str, _Node, _Node]"


class _Parser:
    """expr := term (("+" | "-") term)*; term := factor ("*" factor)*; factor := INT | "(" expr ")"."""

    __slots__ = ("_at", "_tokens")

    def __init__(self, text: str) -> None:
        tokens: list[int | str] = []
        for match in _TOKEN.finditer(text):
            number, symbol = match.groups()
            if number is not None:
                tokens.append(int(number))
            elif symbol is not None and not symbol.isspace():
                if symbol not in "+-*()":
                    raise ValueError(f"unexpected {symbol!r} in arithmetic expression")
                tokens.append(symbol)
        self._tokens = tokens
        self._at = 0

    def parse(self) -> _Node:
        node = self._expr()
        if self._at != len(self._tokens):
            raise ValueError("trailing tokens in arithmetic expression")
        return node

    def _peek(self) -> int | str | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def _expr(self) -> _Node:
        node = self._term()
        while (op := self._peek()) in ("+", "-"):
            self._at += 1
            node = (str(op), node, self._term())
        return node

    def _term(self) -> _Node:
        node = self._factor()
        while self._peek() == "*":
            self._at += 1
            node = ("*", node, self._factor())
        return node

    def _factor(self) -> _Node:
        token = self._peek()
        self._at += 1
        if isinstance(token, int):
            return token
        if token == "(":
            node = self._expr()
            if self._peek() != ")":
                raise ValueError("unbalanced parentheses in arithmetic expression")
            self._at += 1
            return node
        raise ValueError("expected a number or '(' in arithmetic expression")


def _value(node: _Node) -> int:
    if isinstance(node, int):
        return node
    op, left, right = node
    a, b = _value(left), _value(right)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


def evaluate(expression: str) -> int:
    """The value of an expression of non-negative integers with + - * and parentheses (no eval).
    Raises ValueError when it is not one."""
    return _value(_Parser(expression).parse())


def _marker(expression: str) -> TaskMarker:
    tree = _Parser(expression).parse()
    answer = _value(tree)
    tempting = _value(tree[1]) if isinstance(tree, tuple) else answer + 1
    if tempting == answer:  # "+ 0", "* 1": forgetting the last step changes nothing
        tempting = answer + 1
    return TaskMarker(answer, tempting)


def find_marker(text: str) -> TaskMarker | None:
    """The last well-formed `[task: ...]` marker of `text`, or None."""
    if "[task:" not in text:  # the common case, and the cheap one
        return None
    for match in reversed(list(_MARKER.finditer(text))):
        try:
            return _marker(match.group(1))
        except ValueError:
            continue
    return None


def find_task(text: str) -> int | None:
    """The correct answer of the last `[task: ...]` marker of a prompt text, or None."""
    marker = find_marker(text)
    return None if marker is None else marker.answer


def final_answer(text: str) -> str | None:
    """N of the last `The answer is <N>.` in a text (as the simulator writes it), or None."""
    found = _FINAL.findall(text)
    return found[-1] if found else None


# Word problems: a starting quantity, then `difficulty` operations as events of a short story.
_GOODS = (
    ("apples", "crate", "crates"),
    ("books", "box", "boxes"),
    ("marbles", "bag", "bags"),
    ("eggs", "carton", "cartons"),
    ("pencils", "pack", "packs"),
    ("coins", "jar", "jars"),
    ("cookies", "tin", "tins"),
    ("bottles", "case", "cases"),
    ("oranges", "basket", "baskets"),
    ("stamps", "album", "albums"),
)
_NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas")
_PLACES = ("warehouse", "shop", "pantry", "classroom", "garage", "library")
_SCALES = ((2, "doubled"), (3, "tripled"), (4, "quadrupled"))
_QUESTIONS = (
    "How many {items} are there now?",
    "How many {items} are there in the end?",
    "What is the final number of {items}?",
)


def generate_tasks(count: int, seed: int = 0, difficulty: int = 2) -> list[Task]:
    """`count` word problems with `difficulty` operations each (1 to 4), the same for the same seed."""
    if not 1 <= difficulty <= 4:
        raise ValueError("difficulty must be 1, 2, 3 or 4 (operations per task)")
    if count < 0:
        raise ValueError("count must be >= 0")
    rng = random.Random(seed * 7919 + difficulty)
    return [_task(rng, difficulty) for _ in range(count)]


def _task(rng: random.Random, difficulty: int) -> Task:
    items, container, containers = rng.choice(_GOODS)
    name = rng.choice(_NAMES)
    value = rng.randint(5, 60)
    sentences = [
        rng.choice(
            (
                f"{'An' if container[0] in 'aeiou' else 'A'} {container} holds {value} {items}.",
                f"{name} has {value} {items}.",
                f"There are {value} {items} in the {rng.choice(_PLACES)}.",
            )
        )
    ]
    expression = str(value)
    additive = False  # whether the expression has a top-level + or - (to parenthesize before scaling)
    left = difficulty
    while left > 0:
        kinds = ["add", "add"]
        if value >= 2:
            kinds += ["remove", "remove"]
        if left >= 2:
            kinds.append("add_groups")
            if value >= 4:
                kinds.append("remove_groups")
        if value <= 300:
            kinds.append("scale")
        kind = rng.choice(kinds)
        if kind == "add":
            b = rng.randint(2, 40)
            sentences.append(
                rng.choice((f"{b} more {items} are delivered.", f"{name} buys {b} more {items}."))
            )
            expression, value, left = f"{expression} + {b}", value + b, left - 1
        elif kind == "remove":
            b = rng.randint(2, min(value, 40))
            verb = rng.choice(("are sold", "are given away", "break", "go missing"))
            sentences.append(f"{b} {items} {verb}.")
            expression, value, left = f"{expression} - {b}", value - b, left - 1
        elif kind == "add_groups":
            b, c = rng.randint(2, 12), rng.randint(2, 12)
            sentences.append(f"{b} more {containers} arrive, each holding {c} {items}.")
            expression, value, left = f"{expression} + {b} * {c}", value + b * c, left - 2
        elif kind == "remove_groups":
            c = rng.randint(2, min(value // 2, 12))
            b = rng.randint(2, min(value // c, 12))
            sentences.append(f"{b} {containers} of {c} {items} each are shipped out.")
            expression, value, left = f"{expression} - {b} * {c}", value - b * c, left - 2
        else:
            k, word = rng.choice(_SCALES)
            sentences.append(f"Then the number of {items} is {word}.")
            expression = f"({expression}) * {k}" if additive else f"{expression} * {k}"
            value, left = value * k, left - 1
        additive = kind != "scale"
    sentences.append(rng.choice(_QUESTIONS).format(items=items))
    question = " ".join(sentences) + f"\n[task: {expression}]"
    assert evaluate(expression) == value
    return Task(question, value)
