"""How hard a request looks, for the `auto` tier: a transparent score, every part of it named.

    chars  = len(last user message's text) + 0.5 * len(the text of every other message)
    score  = length_per_1k_chars * min(chars, 2000) / 1000
           + math        if the last user message has a math cue
           + code        if it has a code cue
           + multi_step  if it has a multi-step cue
           + effort_high if reasoning_effort is "high" or "xhigh"
           + effort_low  if it is "none", "minimal" or "low"  ("medium", None or anything else: + 0)
    tier   = "deliberate" if score >= threshold else "fast"

With the default weights one cue alone is not enough (math 0.35 < 0.5) but two are, or one in a prompt of
1k chars or more; "high" effort is enough on its own, and "low" effort takes 1.0 off.

A cue counts once, however often it appears. Cues are looked for in the last user message only (the rest
of the conversation adds only length), and only in its first and last `SCAN_CHARS` / 2 = 500 chars when it
is longer than `SCAN_CHARS` (shared by its text parts in order): the question is nearly always at one end
of what was pasted, and this bounds the cost of a long prompt.

    math        arithmetic on numbers (3 + 4, 2*x, 3 = 7, 10 - 3, 15% of), powers (x^2, n**2), LaTeX
                (\\frac, \\sqrt, ...), math symbols; words: calculate, compute, solve, how many, how much,
                probability, integral, derivative, equation, remainder, matrix, percent, sum of ...
    code        code fences, `=>`, lines ending in `{` or `;`, #include, C++, XxxError / XxxException,
                SELECT ... FROM; words: def f, function, class Foo:, stack trace, traceback, SQL, regex,
                bug, debug, compiler, language names, console.log, import lines, Python and Java frames
    multi_step  a numbered list (a line starting "2." or "2)"); words: step by step, prove, proof, show
                that, explain why/how, derive, justify, walk me through, compare, contrast, pros and cons,
                trade-offs, "first ... then" (at most 8 words apart)

Words match whole and in any case. `reasons` names what added to the score, in this order: "math",
"code", "multi_step", then "length 1.2k chars" (when chars >= 1000; the figure uncapped), then the
effort: "effort high", "effort low", ...

Cost: no copy of any text is made, and no IGNORECASE nor leading \\b, which make `re` try every position:
each cue's words are one regex that `re` starts only after a non-word char (plus one anchored try at the
start) and its signs another, which starts only at their few first chars; tens of microseconds for a
1k-char prompt, and no more for a longer one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from gateway.settings import AutoTierSettings

__all__ = ["Difficulty", "score"]

LENGTH_CAP_CHARS = 2000  # length adds nothing beyond this many chars
LENGTH_REASON_CHARS = 1000  # length is named among the reasons from this many chars
REST_SHARE = 0.5  # a char elsewhere in the conversation weighs this much of one in the last user message
SCAN_CHARS = 1000  # cues are looked for in at most this many chars of the last user message: half each end
HIGH_EFFORTS = ("high", "xhigh")
LOW_EFFORTS = ("none", "minimal", "low")
TEXT_PARTS = ("text", "input_text")


@dataclass(frozen=True, slots=True)
class _Cue:
    """A cue's precompiled patterns: its words, looked for just after a non-word char (so that `re` only
    stops there, and skips the letters in between) or at the very start, and its signs, if any."""

    after: re.Pattern[str]
    at_start: re.Pattern[str]
    signs: re.Pattern[str] | None

    @classmethod
    def of(cls, words: Sequence[str], signs: str | None = None, flags: int = 0) -> _Cue:
        """`words`: regex fragments in lower case, each starting with a plain letter, matched as whole words
        in any case (grouped by first letter, a literal in either case: an alternative `re` skips at once
        when that letter is not there); `signs`: a regex for the rest; `flags` for all of them."""
        firsts = sorted({word[0] for word in words})
        alternation = "|".join(
            f"{letter}(?i:{'|'.join(word[1:] for word in words if word[0] == first)})\\b"
            for upper in (False, True)
            for first in firsts
            for letter in [first.upper() if upper else first]
        )
        return cls(
            after=re.compile(f"\\W(?:{alternation})", flags),
            at_start=re.compile(alternation, flags),
            signs=re.compile(signs, flags) if signs is not None else None,
        )

    def found(self, text: str, start: int, end: int) -> bool:
        """Whether text[start:end] holds the cue."""
        if start == 0 and self.at_start.match(text, 0, end) is not None:
            return True
        if self.after.search(text, max(start - 1, 0), end) is not None:
            return True
        return self.signs is not None and self.signs.search(text, start, end) is not None


_ARITHMETIC = (
    r"(?:\s*[+*/\u00d7\u00f7=<>\u2264\u2265]\s*[\w(]|\s+[-\u2212]\s+\d|\s*%\s*of\b)"  # after a digit
)
_MATH = _Cue.of(
    [
        "calculate",
        "compute",
        "solve",
        r"how\s+many",
        r"how\s+much",
        "probabilit(?:y|ies)",
        "integra(?:l|ls|te)",
        "derivatives?",
        "differentiate",
        "equations?",
        "inequalit(?:y|ies)",
        "remainder",
        "divisible",
        "factorial",
        "polynomials?",
        "matri(?:x|ces)",
        r"eigen\w*",
        r"expected\s+value",
        r"square\s+root",
        "percent(?:age)?",
        r"sum\s+of",
        r"product\s+of",
        r"average\s+of",
    ],
    "|".join(f"{digit}{_ARITHMETIC}" for digit in "0123456789")  # 3 + 4, 2*x, 3 = 7, 10 - 3; not 2024-01-05
    + r"|\^(?<=[\w)]\^)\s*\d|\*\*(?<=[\w)]\*\*)\s*\d"  # x^2, (a+b)**2
    + r"|\\(?:frac|dfrac|sqrt|int|iint|sum|prod|lim|cdot|times|infty|binom|log|sin|cos|tan)\b"
    + "|\u221a|\u222b|\u2211|\u220f|\u03c0|\u221e|\u2264|\u2265",  # root, integral, sum, product, pi...
)
_CODE = _Cue.of(
    [
        r"def\s+\w+",
        "functions?",
        r"stack\s*traces?",
        "traceback",
        "segfault",
        r"segmentation\s+fault",
        "sql",
        "regexp?",
        "regexes",
        r"regular\s+expressions?",
        "bugs?",
        r"debug\w*",
        "compilers?",
        "python",
        "javascript",
        "typescript",
        "java",
        "golang",
        "kotlin",
        r"class\s+(?-i:[A-Z])\w*\s*[(:{]",
        r"console\.log",
        r"from\s+[\w.]+\s+import\s+\w",
        r"import\s+[\w.]+[ \t]*$",
        r"at\s+[\w.$]+\([\w.]+:\d+\)",  # a Java stack frame
        r"file \"[^\"\n]+\", line \d+",  # a Python one
    ],
    r"```|~~~|=>|#include\s*<|\{[ \t]*$|;[ \t]*$|C\+\+(?!\w)|c\+\+(?!\w)"
    + r"|Error(?<=[a-z]Error)\b|Exception(?<=[a-z]Exception)\b"  # TypeError, NullPointerException
    + r"|SELECT\b.+?\bFROM\b",
    re.MULTILINE,
)
_MULTI_STEP = _Cue.of(
    [
        r"step[\s-]+by[\s-]+step",
        "prove",
        "proof",
        r"show\s+that",
        r"explain\s+(?:why|how)",
        "derive",
        "justify",
        r"walk\s+me\s+through",
        "compare",
        "comparison",
        "contrast",
        r"pros\s+and\s+cons",
        "trade-?offs?",
        r"first\b(?:\W+\w+){0,8}?\W+then",  # first ... then, at most 8 words apart
    ],
    r"\n[ \t]*2[.)][ \t]",  # a numbered list: a line starting "2." or "2)"
)


_DEFAULT_WEIGHTS = AutoTierSettings()  # frozen


@dataclass(frozen=True, slots=True)
class Difficulty:
    score: float
    tier: str  # "fast" | "deliberate"
    reasons: tuple[str, ...]  # what added to the score, e.g. ("math", "length 2.3k chars")


def score(
    messages: Sequence[Mapping[str, object]] | str,
    reasoning_effort: str | None,
    weights: AutoTierSettings = _DEFAULT_WEIGHTS,
) -> Difficulty:
    """The difficulty of a chat request (its `messages`, or a prompt as one string), by the module's formula.

    The last message whose role is "user" is the one scored; with none, every message only adds length.
    A message's content may be a string or a list of parts, of which only text parts count. The request's
    JSON is taken as it came: a string in place of a message is a user message (a completions prompt given
    as a list), anything else not a message (token ids) is passed over."""
    conversation: Sequence[object] = (messages,) if isinstance(messages, str) else messages
    last_user = len(conversation) - 1
    while last_user >= 0 and not _is_user(conversation[last_user]):
        last_user -= 1
    math = code = multi_step = False
    last_chars = rest_chars = 0
    budget = SCAN_CHARS
    for index, message in enumerate(conversation):
        for text in _texts(message.get("content") if isinstance(message, Mapping) else message):
            if index != last_user:
                rest_chars += len(text)
                continue
            last_chars += len(text)
            if budget > 0:
                math = math or _found(_MATH, text, budget)
                code = code or _found(_CODE, text, budget)
                multi_step = multi_step or _found(_MULTI_STEP, text, budget)
                budget -= len(text)
    chars = last_chars + REST_SHARE * rest_chars
    total = weights.length_per_1k_chars * min(chars, LENGTH_CAP_CHARS) / 1000
    reasons: list[str] = []
    if math:
        total += weights.math
        reasons.append("math")
    if code:
        total += weights.code
        reasons.append("code")
    if multi_step:
        total += weights.multi_step
        reasons.append("multi_step")
    if chars >= LENGTH_REASON_CHARS:
        reasons.append(f"length {chars / 1000:.1f}k chars")
    if reasoning_effort in HIGH_EFFORTS:
        total += weights.effort_high
        reasons.append(f"effort {reasoning_effort}")
    elif reasoning_effort in LOW_EFFORTS:
        total += weights.effort_low
        reasons.append(f"effort {reasoning_effort}")
    tier = "deliberate" if total >= weights.threshold else "fast"
    return Difficulty(score=total, tier=tier, reasons=tuple(reasons))


def _found(cue: _Cue, text: str, budget: int) -> bool:
    """Whether `cue` is in `text`, or in its first and last `budget` / 2 chars when it is longer."""
    if len(text) <= budget:
        return cue.found(text, 0, len(text))
    half = budget // 2
    return cue.found(text, 0, half) or cue.found(text, len(text) - half, len(text))


def _is_user(message: object) -> bool:
    return isinstance(message, str) or (isinstance(message, Mapping) and message.get("role") == "user")


def _texts(content: object) -> Iterator[str]:
    """The texts of a message's content: the string itself, or its text parts (not images, audio, files)."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, Sequence):
        for part in content:
            if isinstance(part, str):
                yield part
            elif isinstance(part, Mapping) and part.get("type") in TEXT_PARTS:
                text = part.get("text")
                if isinstance(text, str):
                    yield text
