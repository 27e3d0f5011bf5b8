"""Self-consistency: of several samples of one request, the one whose final answer most samples share.

`extract_answer` reads the final answer of one answer text, in this order of preference:

1. the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced (one left open, by an answer cut short, is
   passed over for the one before it);
2. the last explicit statement: "The answer is 42.", "Final answer: (B)", "**Answer:** 3/4" (a line starting
   with "Answer"), "My final answer is ..."; a statement whose line ends right after it takes the next line;
3. the last number anywhere in the text;
4. the whole text, when it is short (8 words or fewer).

and normalises it so that equal answers compare equal:

- option letters: "(b)", "B)", "B.", "option B", "choice (b)", a lone "b" -> "B" (A to J; a bare letter
  followed by more text only when upper case: "A cat" is not an option);
- numbers: "$1,234.50" -> "1234.5", "+7" -> "7", "2.0" -> "2", "-0" -> "0", "007" -> "7", "3 / 4" and
  "\\frac{3}{4}" -> "3/4" (fractions are not reduced), "45 %" and "45\\%" -> "45%";
- an explicit statement that is neither takes its first number (after its last "=": "x = 5" -> "5"), else
  its text when short;
- boxed text that is not plain words ("x^2 + 1") is kept whole, compacted: case folded, spaces dropped;
- short strings: case folded, punctuation, quotes and markdown dropped, spaces collapsed: ' "New York." '
  -> "new york".

`vote` takes the answer most samples give; a tie goes to the answer given first; the sample returned is the
first one giving it. Samples without an answer never win unless no sample has one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Vote", "extract_answer", "ranking", "tally", "vote"]

SHORT_WORDS = 8  # a text of at most this many words may be an answer as a whole
BOX_TRIES = 3  # boxes looked into, from the last one, for one that closes

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")
_STATEMENT = re.compile(
    r"(?:\bfinal\s+answer|\b(?:the|my)\s+(?:final\s+|correct\s+)?answer|^[ \t>#*_-]*answer)"
    r"[ \t*_]*(?:is\b|:|=)[ \t*_:]*(?P<rest>[^\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-+\u2212])?\$?"
    r"(?:(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?|\.(?P<bare>\d+))"
    r"(?:[ \t]*/[ \t]*(?P<den>\d+))?"
    r"(?P<pct>[ \t]?%)?"
)
_OPTION = re.compile(
    r"(?i:option|choice)\s*\(?(?P<a>[A-Ja-j])\)?(?!\w)"  # option B, choice (b)
    r"|\((?P<b>[A-Ja-j])\)"  # (b)
    r"|(?P<c>[A-Ja-j])\)"  # b)
    r"|(?P<d>[A-Ja-j])[.:]?$"  # b, B.
    r"|(?P<e>[A-J])[.:]\s"  # B. Paris
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\[,;:! ]|\\left|\\right|\\displaystyle|\^\s*\{?\\circ\}?")
_MARKDOWN = re.compile(r"\*\*|__|[`$]|\\[()\[\]]")  # a lone * may be a product: stripped at the ends only
_SENTENCE_END = re.compile(r"[.!?;](?:\s|$)")
_PLAIN = re.compile(r"[\w\s.,;:!?'\"\u2018\u2019\u201c\u201d-]*")
_PUNCTUATION = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Vote:
    winner: int  # index of the chosen sample
    answer: str | None  # its normalised answer; None when no sample has one
    agreement: float  # share of ALL samples whose answer equals the winner's; 0.0 when no answer
    counts: tuple[tuple[str, int], ...]  # answer -> votes, most first (ties: first given first); no Nones


def vote(texts: Sequence[str]) -> Vote:
    """The majority answer over `texts` (the samples' answer texts, in sample order)."""
    return tally([extract_answer(text) for text in texts])


def tally(answers: Sequence[str | None]) -> Vote:
    """The majority over answers already normalised (None: a sample without one), in sample order."""
    if not answers:
        raise ValueError("no samples to vote on")
    votes, first, ranked = ranking(answers)
    if not ranked:
        return Vote(winner=0, answer=None, agreement=0.0, counts=())
    best = ranked[0]
    return Vote(
        winner=first[best],
        answer=best,
        agreement=votes[best] / len(answers),
        counts=tuple((answer, votes[answer]) for answer in ranked),
    )


def ranking(answers: Sequence[str | None]) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """Each answer's votes, the sample that gave it first, and the answers most voted first (ties: the one
    given first first); samples without an answer (None) are set aside."""
    votes: dict[str, int] = {}
    first: dict[str, int] = {}
    for index, answer in enumerate(answers):
        if answer is not None:
            votes[answer] = votes.get(answer, 0) + 1
            first.setdefault(answer, index)
    return votes, first, sorted(votes, key=lambda answer: (-votes[answer], first[answer]))


def extract_answer(text: str) -> str | None:
    """The normalised final answer of one answer text; None when it has none (see the module's doc)."""
    boxed = _last_boxed(text)
    if boxed is not None:
        answer = _boxed_answer(boxed)
        if answer is not None:
            return answer
    statement = _last_statement(text)
    if statement is not None:
        answer = _statement_answer(statement)
        if answer is not None:
            return answer
    cleaned = _clean(text)
    numbers = list(_NUMBER.finditer(cleaned))
    if numbers:
        return _number(numbers[-1])
    if len(cleaned.split()) <= SHORT_WORDS:
        return _option(cleaned) or _words(cleaned)
    return None


def _last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` whose braces close (of the last `BOX_TRIES`: an answer cut
    short may leave its last one open)."""
    starts = [match.end() for match in _BOX.finditer(text)]
    for start in reversed(starts[-BOX_TRIES:]):
        depth = 1
        for brace in _BRACE.finditer(text, start):
            depth += 1 if brace.group() == "{" else -1
            if depth == 0:
                return text[start : brace.start()]
    return None


def _last_statement(text: str) -> str | None:
    """What the last explicit "the answer is" statement states (the next line when its own is empty)."""
    statements = list(_STATEMENT.finditer(text))
    if not statements:
        return None
    last = statements[-1]
    rest = last.group("rest").strip()
    if not _clean(rest).strip(" \t*_:"):
        following = text[last.end() :].strip()
        rest = following.split("\n", 1)[0].strip() if following else ""
    return rest or None


def _boxed_answer(content: str) -> str | None:
    cleaned = _clean(content).strip(" \t\n*")
    if not cleaned:
        return None
    whole = _whole_number(cleaned) or _option(cleaned)
    if whole is not None:
        return whole
    if "=" in cleaned:
        after = _whole_number(cleaned.rsplit("=", 1)[1].strip())
        if after is not None:
            return after
    if _PLAIN.fullmatch(cleaned):
        return _words(cleaned)
    return _SPACES.sub("", cleaned).casefold()


def _statement_answer(statement: str) -> str | None:
    cleaned = _clean(statement).strip(" \t\n*")
    option = _option(cleaned)
    if option is not None:
        return option
    end = _SENTENCE_END.search(cleaned)
    sentence = cleaned[: end.start()] if end else cleaned
    whole = _whole_number(sentence.strip())
    if whole is not None:
        return whole
    tail = sentence.rsplit("=", 1)[1] if "=" in sentence else sentence
    number = _NUMBER.search(tail) or _NUMBER.search(sentence)
    if number is not None:
        return _number(number)
    if len(sentence.split()) <= SHORT_WORDS:
        return _words(sentence)
    return None


def _clean(text: str) -> str:
    """LaTeX fractions as a/b, \\text{x} as x, spacing commands and markdown emphasis dropped."""
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    text = _LATEX_TEXT.sub(r"\1", text)
    text = _LATEX_NOISE.sub("", text)
    text = text.replace("\\%", "%").replace("\\$", "$")
    return _MARKDOWN.sub("", text)


def _option(text: str) -> str | None:
    match = _OPTION.match(text.strip().strip("\"'"))
    if match is None:
        return None
    letter = match.group("a") or match.group("b") or match.group("c") or match.group("d") or match.group("e")
    return letter.upper()


def _whole_number(text: str) -> str | None:
    match = _NUMBER.fullmatch(text.rstrip(".").strip(" \t\n*"))
    return _number(match) if match is not None else None


def _number(match: re.Match[str]) -> str:
    integer = (match.group("int") or "0").replace(",", "").lstrip("0") or "0"
    fraction = (match.group("frac") or match.group("bare") or "").rstrip("0")
    value = f"{integer}.{fraction}" if fraction else integer
    denominator = match.group("den")
    if denominator is not None:
        value = f"{value}/{denominator.lstrip('0') or '0'}"
    negative = match.group("sign") in ("-", "\u2212") and value.strip("0./") != ""
    return ("-" if negative else "") + value + ("%" if match.group("pct") else "")


def _words(text: str) -> str | None:
    words = _SPACES.sub(" ", _PUNCTUATION.sub("", text.casefold())).strip()
    return words or None
