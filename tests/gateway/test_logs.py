"""The log writer of a server (`gateway.logs`, off the loop): lines come out whole, in order, with their
tracebacks, in one write per batch, and none is lost when the process stops."""

from __future__ import annotations

import logging
import queue
import threading

from gateway.logs import LOG_FORMAT, _Enqueue, _LineWriter, _Records

DEADLINE_S = 30.0


class Stream:
    """A stderr that records each write and says when one lands."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.wrote = threading.Semaphore(0)

    def write(self, text: str) -> int:
        self.writes.append(text)
        self.wrote.release()
        return len(text)

    def flush(self) -> None:
        pass


class Gate:
    """The writer's pause, held shut until the test opens it."""

    def __init__(self) -> None:
        self.reached = threading.Semaphore(0)
        self.open = threading.Event()

    def __call__(self) -> None:
        self.reached.release()
        assert self.open.wait(DEADLINE_S), "the test never opened the gate"


def logger_into(records: _Records, name: str) -> logging.Logger:
    log = logging.Logger(name, logging.INFO)  # not the registry's: nothing else sees it
    log.addHandler(_Enqueue(records))
    return log


def test_lines_logged_while_the_writer_pauses_come_out_in_one_write() -> None:
    records: _Records = queue.SimpleQueue()
    stream, gate = Stream(), Gate()
    writer = _LineWriter(records, stream, logging.Formatter("%(name)s %(message)s"), pause=gate)  # type: ignore[arg-type]
    log = logger_into(records, "tiergate.requests")
    writer.start()
    log.info("first %d", 1)
    assert stream.wrote.acquire(timeout=DEADLINE_S) and gate.reached.acquire(timeout=DEADLINE_S)
    for n in (2, 3, 4):
        log.info("line %d", n)
    gate.open.set()
    assert stream.wrote.acquire(timeout=DEADLINE_S)
    writer.stop()
    assert not writer.is_alive()
    assert stream.writes == [
        "tiergate.requests first 1\n",
        "tiergate.requests line 2\ntiergate.requests line 3\ntiergate.requests line 4\n",
    ]


def test_a_line_is_made_when_logged_and_keeps_its_traceback() -> None:
    records: _Records = queue.SimpleQueue()
    stream = Stream()
    log = logger_into(records, "tiergate.engines")
    state = {"replica": "a"}
    log.warning("replica %s", state)
    state["replica"] = "b"  # changed after the call: the line says what was logged
    try:
        raise ValueError("engine said no")
    except ValueError:
        log.exception("failed")
    writer = _LineWriter(records, stream, logging.Formatter(LOG_FORMAT), pause=lambda: None)  # type: ignore[arg-type]
    writer.start()
    writer.stop()  # what was queued before the stop is written before the writer ends
    lines = "".join(stream.writes)
    assert " WARNING tiergate.engines: replica {'replica': 'a'}\n" in lines
    assert " ERROR tiergate.engines: failed\nTraceback (most recent call last):\n" in lines
    assert lines.endswith("ValueError: engine said no\n")
    assert records.empty()


def test_a_filtered_record_is_not_queued() -> None:
    records: _Records = queue.SimpleQueue()
    handler = _Enqueue(records)
    handler.addFilter(lambda record: record.levelno >= logging.WARNING)
    log = logging.Logger("tiergate.test", logging.INFO)
    log.addHandler(handler)
    log.info("dropped")
    log.warning("kept")
    queued = records.get_nowait()
    assert queued is not None and queued.getMessage() == "kept"
    assert records.empty()
