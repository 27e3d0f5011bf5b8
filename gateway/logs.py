"""Where a process's log lines go: stderr, in one format.

A server (`off_loop`) hands its records to a thread of their own: the event loop pays for a queued record
(`QueueHandler`: the message made, nothing formatted or written), and the thread formats every record
queued so far and writes them in one write - a request's log line is neither formatted nor flushed on the
hot path, and a busy server writes its lines in batches, not a system call each. What is queued when the
process exits is written before it ends. Each worker process of `tiergate serve --workers N` configures its
own (`gateway.app.app_from_environment`).
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import threading
from typing import TextIO

__all__ = ["LOG_FORMAT", "configure_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_Records = queue.SimpleQueue[logging.LogRecord | None]  # None: the writer's stop


def configure_logging(level: str, *, off_loop: bool = False) -> None:
    if off_loop:
        records: _Records = queue.SimpleQueue()
        writer = _LineWriter(records, sys.stderr, logging.Formatter(LOG_FORMAT))
        enqueue = logging.handlers.QueueHandler(records)
        enqueue.setFormatter(logging.Formatter("%(message)s"))  # the thread formats the line
        logging.basicConfig(level=level.upper(), handlers=[enqueue], force=True)
        writer.start()
        atexit.register(writer.stop)
    else:
        logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it would log every health check


class _LineWriter(threading.Thread):
    """Formats and writes the queued records, all those waiting in one write; None stops it."""

    def __init__(
        self,
        records: queue.SimpleQueue[logging.LogRecord | None],
        stream: TextIO,
        formatter: logging.Formatter,
    ) -> None:
        super().__init__(name="tiergate-log-writer", daemon=True)
        self._records = records
        self._stream = stream
        self._formatter = formatter

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

    def stop(self) -> None:
        self._records.put(None)
        self.join(timeout=5.0)
