"""Reading the `tiergate` commands' plain tables (their output when stdout is not a terminal) in tests."""

from __future__ import annotations


def read_table(text: str) -> list[dict[str, str]]:
    """The rows of a plain table as dicts by header. Columns are what lies between runs of two or more
    blanks in every line (a cell may hold single blanks: "fast:rpm=60 deliberate:rpm=60")."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no table at all"
    width = max(len(line) for line in lines)
    padded = [line.ljust(width) for line in lines]
    blank = [all(line[p] == " " for line in padded) for p in range(width)] + [True, True]
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for p in range(width + 1):
        if not blank[p] and start is None:
            start = p
        elif blank[p] and blank[p + 1] and start is not None:  # two blanks in every line: a column ends
            spans.append((start, p))
            start = None
    headers = [padded[0][a:b].strip() for a, b in spans]
    return [dict(zip(headers, (line[a:b].strip() for a, b in spans), strict=True)) for line in padded[1:]]
