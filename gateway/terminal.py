"""What the `tiergate` commands print: tables on stdout, JSON documents, progress bars on stderr.

On a terminal a table has a ruled, bold header (rich); piped or redirected it is plain aligned columns under a
header line (no colour codes, no box drawing, no trailing blanks) that `grep` and `awk` read, and scripts have
`--json`. Progress bars are drawn on stderr, and only when stderr is a terminal: stdout stays the command's
output, and a log or CI run gets no carriage returns. A closed pipe ends a command quietly (`quiet_pipe`).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO

import orjson
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

__all__ = [
    "BROKEN_PIPE_EXIT",
    "Column",
    "ProgressBars",
    "exit_on_broken_pipe",
    "print_json",
    "print_table",
    "progress_bars",
    "render_table",
]

# 128 + SIGPIPE: what a shell reports for `cat` or `grep` cut off by `head`, so `set -o pipefail` scripts see
# tiergate like any other writer; 0 would claim the output was all delivered when the reader stopped early
BROKEN_PIPE_EXIT = 141
# a row is never wrapped nor cut to fit: one record, one line, every id whole (a wide table on a narrow
# terminal wraps its lines as the terminal does; squeezed into 80 columns, rich folded ids and limits apart)
_WIDTH = 100_000
_PIECE = 16_384


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    numeric: bool = False  # right-aligned


def render_table(columns: Sequence[Column | str], rows: Iterable[Sequence[Any]], *, terminal: bool) -> str:
    """The table as text: for a terminal (ruled bold header, rich's styles) or plain (aligned columns)."""
    table = Table(
        box=box.SIMPLE_HEAD if terminal else None,
        show_edge=False,
        pad_edge=False,
        header_style="bold" if terminal else "",
    )
    for column in columns:
        spec = Column(column) if isinstance(column, str) else column
        table.add_column(
            spec.header,
            justify="right" if spec.numeric else "left",
            no_wrap=True,
        )
    for row in rows:
        # Text, not str: a tenant named "[bold]x" is shown as written, never read as rich markup
        table.add_row(*(Text("-" if cell is None else str(cell)) for cell in row))
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=_WIDTH,
        force_terminal=terminal,
        no_color=None if terminal else True,  # on a terminal NO_COLOR (the environment) decides
        highlight=False,
        emoji=False,
    )
    console.print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def print_table(
    columns: Sequence[Column | str], rows: Iterable[Sequence[Any]], *, stream: TextIO | None = None
) -> None:
    """A listing with its header (also when it has no rows: the header says what would be there)."""
    out = stream or sys.stdout
    _write(out, render_table(columns, rows, terminal=out.isatty()))


def print_json(document: Any, *, stream: TextIO | None = None) -> None:
    """One JSON document (indented), the whole output of a `--json` command."""
    out = stream or sys.stdout
    _write(out, orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def _write(out: TextIO, text: str) -> None:
    # in pieces: CPython's buffered writer takes a pipe's short write (its reader went away mid-write) as the
    # end of the text, silently; the next piece then meets the closed pipe and raises BrokenPipeError
    for start in range(0, len(text), _PIECE):
        out.write(text[start : start + _PIECE])
        out.flush()


class ProgressBars:
    """Bars on stderr, one per task, while a command works; nothing at all when stderr is no terminal."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def add(self, description: str, total: int | None) -> TaskID | None:
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total)

    def update(
        self, task: TaskID | None, *, advance: int = 0, completed: int | None = None, description: str = ""
    ) -> None:
        if self._progress is None or task is None:
            return
        changes: dict[str, Any] = {"advance": advance} if advance else {}
        if completed is not None:
            changes["completed"] = completed
        if description:
            changes["description"] = description
        self._progress.update(task, **changes)

    def advancer(self, description: str, total: int | None) -> Callable[[], None]:
        """A task and the function that counts one unit of it done."""
        task = self.add(description, total)
        return lambda: self.update(task, advance=1)


@contextmanager
def progress_bars(*, show: bool | None = None) -> Iterator[ProgressBars]:
    """Progress bars for the block; `show` None: when stderr is a terminal. Rich redraws them from its own
    thread, so they may be advanced from a worker thread too."""
    if not (sys.stderr.isatty() if show is None else show):
        yield ProgressBars(None)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        yield ProgressBars(progress)


def exit_on_broken_pipe() -> NoReturn:
    """Ends the process quietly after stdout's reader went away (`tiergate ... --json | head -1`).

    stdout is pointed at /dev/null first: Python flushes it once more at exit, and that flush would fail again
    and print "Exception ignored ... BrokenPipeError" (the advice of Python's `signal` documentation).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(BROKEN_PIPE_EXIT)
