"""Where a process's log lines go: stderr, in one format.

A server (`off_loop`) hands its records to a thread of their own: the event loop pays for a queued record
(its message made, nothing formatted or written), and the thread formats every record queued so far and
writes them in one write - a request's log line is neither formatted nor flushed on the hot path. The thread
wakes at most every `BATCH_S` (50 ms): a busy server writes its lines in batches, one wake-up and one system
call each, instead of waking the thread, on another CPU, for every line (a hand-over between threads costs
about 0.1-0.2 ms of CPU on a small VM; docs/benchmarks.md). A line reaches stderr at most `BATCH_S` after it
was logged; what is queued when the process exits is written before it ends.
Each worker process of `tiergate serve --workers N` configures its own (`gateway.app.app_from_environment`).
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["BATCH_S", "LOG_FORMAT", "configure_logging"]

BATCH_S = 0.05
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_Records = queue.SimpleQueue[logging.LogRecord | None]  # None: the writer's stop


def configure_logging(level: str, *, off_loop: bool = False) -> None:
    if off_loop:
        records: _Records = queue.SimpleQueue()
        writer = _LineWriter(records, sys.stderr, logging.Formatter(LOG_FORMAT))
        logging.basicConfig(level=level.upper(), handlers=[_Enqueue(records)], force=True)
        writer.start()
        atexit.register(writer.stop)
    else:
        logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it would log every health check


class _Enqueue(logging.Handler):
    """Queues a record for the writer thread, its message made here (its arguments may change after the
    call) and its traceback, if any, made into text (a traceback holds frames that move on). It is the
    process's only handler, so it may change the record instead of copying it as `QueueHandler` does."""

    def __init__(self, records: _Records) -> None:
        super().__init__()
        self._records = records
        self._texts = logging.Formatter()

    def handle(self, record: logging.LogRecord) -> bool:  # no lock to take: SimpleQueue.put is thread-safe
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg = record.getMessage()
            record.args = None
            if record.exc_info:
                record.exc_text = self._texts.formatException(record.exc_info)
                record.exc_info = None
        except Exception:
            self.handleError(record)
            return
        self._records.put(record)


class _LineWriter(threading.Thread):
    """Formats and writes the queued records, all those waiting in one write, then pauses (`BATCH_S`) for
    more to gather; None stops it."""

    def __init__(
        self,
        records: _Records,
        stream: TextIO,
        formatter: logging.Formatter,
        pause: Callable[[], None] = lambda: time.sleep(BATCH_S),
    ) -> None:
        super().__init__(name="tiergate-log-writer", daemon=True)
        self._records = records
        self._stream = stream
        self._formatter = formatter
        self._pause = pause

    def run(self) -> None:
        running = True
        while running:
            lines: list[str] = []
            record = self._records.get()
            while True:
                if record is None:
                    running = False
                    break
                lines.append(self._formatter.format(record))
                try:
                    record = self._records.get_nowait()
                except queue.Empty:
                    break
            if lines:
                try:
                    self._stream.write("\n".join(lines) + "\n")
                    self._stream.flush()
                except (OSError, ValueError):  # stderr gone (a closed pipe): nothing left to tell
                    pass
            if running:
                self._pause()  # a stop waits for it at most

    def stop(self) -> None:
        self._records.put(None)
        self.join(timeout=5.0)
