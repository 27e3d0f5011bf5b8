"""The journal's segment being written: in place, each segment allocated ahead, every write timed. Blocking
calls: the journal's thread runs them, or the event loop while that thread is idle (pricing.journal)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from pricing.journal_files import segment_path, sync_directory
from pricing.journal_format import Position

__all__ = ["SegmentWriter"]

_WRITE_TIME_WEIGHT = 0.25  # the newest write's weight in the writes' moving average


def _sync(fd: int) -> None:
    # fdatasync: the data and the file size, without the timestamps nobody reads back
    (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)


class SegmentWriter:
    """The segment being appended to. Used by one thread at a time: the journal's, or the loop's while the
    journal's is idle."""

    def __init__(self, directory: Path, first: int, *, fsync: bool, segment_bytes: int) -> None:
        self._directory = directory
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._number = first
        self._offset = 0
        self._fd: int | None = None
        # seconds a write (with its sync) has taken lately, a moving average; None before the first
        self.write_s: float | None = None

    def write(self, data: bytes) -> Position:
        try:
            fd = self._fd if self._fd is not None else self._open()
            started = time.perf_counter()  # a new segment's opening (a directory sync) not timed
            view, at = memoryview(data), self._offset
            while view:  # written in place: a segment is allocated ahead (see _open)
                wrote = os.pwrite(fd, view, at)
                view, at = view[wrote:], at + wrote
            if self._fsync:
                _sync(fd)
        except OSError:
            # after a failed write or fsync the file's tail is unknown (Linux may even drop the dirty pages):
            # never append after it again; a segment that failed to open is skipped the same way
            self._seal()
            raise
        took = time.perf_counter() - started
        last = self.write_s
        self.write_s = took if last is None else last + (took - last) * _WRITE_TIME_WEIGHT
        self._offset += len(data)
        if self._offset >= self._segment_bytes:
            self._seal()
        return Position(self._number, self._offset)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        path = segment_path(self._directory, self._number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            if self._fsync:
                # Allocated ahead, its size synced once: a row's sync then writes its data alone, where an
                # append that grew the file also had the file system's journal commit the new size (145
                # against 100 us a row on ext4 here). The rest reads as zeros, where readers stop.
                with contextlib.suppress(OSError):  # a file system that cannot: appended as it grows
                    os.posix_fallocate(fd, 0, self._segment_bytes)
                    os.fsync(fd)
                sync_directory(self._directory)  # the new name must survive a crash as surely as its lines
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _seal(self) -> None:
        self.close()
        self._number += 1
        self._offset = 0
