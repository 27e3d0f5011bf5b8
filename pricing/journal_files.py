"""A journal directory on disk: its lock, segments, checkpoint and reading. Blocking calls: run them in a
thread, never on the event loop.

    <root>/                      one per host (or per volume), shared by a gateway's worker processes
        <name>/                  one per process, named when it is created and never reused
            journal.lock         flock()ed by the owner for its whole life: the kernel drops it when the
                                 process dies, however it dies, which is how a successor tells an orphan
            segment-000000000001.log ...   written by the owner only, one after another, each allocated
                                 ahead (with fsync): its unwritten rest reads as zeros
            checkpoint           where draining got to: "<segment> <offset> <crc32>"
        .new-<name>-<random>/    a directory being created (locked before it is renamed into place)
        quarantine.log           corrupt lines found while draining, kept for a human

A directory only becomes visible under its final name with its lock already held, so a successor looking
for orphans can never take the lock of a directory whose owner has not locked it yet.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import secrets
import socket
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pricing.journal_format import CorruptLine, Position, decode_line
from pricing.records import LedgerRow

__all__ = [
    "CHECKPOINT",
    "LOCK",
    "Batch",
    "Damage",
    "JournalLocked",
    "create_locked",
    "delete_segments_before",
    "orphan_candidates",
    "read_batch",
    "read_checkpoint",
    "remove_journal",
    "report_damage",
    "segment_path",
    "segments",
    "sync_directory",
    "try_lock",
    "write_checkpoint",
    "written_end",
]

log = logging.getLogger("tiergate.journal")

LOCK = "journal.lock"
CHECKPOINT = "checkpoint"
QUARANTINE = "quarantine.log"
_NEW = ".new-"
_SEGMENT_PREFIX, _SEGMENT_SUFFIX = "segment-", ".log"
_PAGE = 4096  # the step in which written_end looks for a segment's unwritten rest


class JournalLocked(RuntimeError):
    """Another live process owns this journal directory."""


@dataclass(frozen=True, slots=True)
class Damage:
    """A line read but not used: torn (the last line of a process that died mid-write, never
    acknowledged) or corrupt (complete, but failing its own checks)."""

    segment: Path
    offset: int
    data: bytes
    problem: str

    @property
    def torn(self) -> bool:
        return not self.data.endswith(b"\n")


@dataclass(slots=True)
class Batch:
    next: Position  # where the next read starts: a checkpoint once the rows are stored
    rows: list[LedgerRow] = field(default_factory=list)
    damaged: list[Damage] = field(default_factory=list)


# -- locking --------------------------------------------------------------------------------------------
def create_locked(directory: Path, *, fsync: bool) -> int:
    """Make `directory` ours: create it already locked, or lock it if it exists and its owner is dead.
    Returns the lock's file descriptor; closing it releases the directory."""
    root = directory.parent
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # each retry means another process created or removed it in between
        if not directory.exists():
            fd = _create_staged(directory, fsync=fsync)
            if fd is not None:
                return fd
            continue
        try:
            # create=True: a directory left without its lock file (a removal cut short) is ours to reuse
            fd_or_none = try_lock(directory, create=True)
        except FileNotFoundError:
            continue  # removed under us by a successor that had drained it
        if fd_or_none is None:
            raise JournalLocked(f"journal {directory} is in use by a live process (see {directory / LOCK})")
        return fd_or_none
    raise JournalLocked(f"journal {directory} keeps changing under us: another process is using the name")


def _create_staged(directory: Path, *, fsync: bool) -> int | None:
    staging = directory.parent / f"{_NEW}{directory.name}-{secrets.token_hex(4)}"
    staging.mkdir()
    fd = _open_lock(staging / LOCK, create=True)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    try:
        staging.rename(directory)
    except OSError:  # someone else created it meanwhile
        os.close(fd)
        remove_journal(staging)
        return None
    if fsync:
        sync_directory(directory.parent)
    return fd


def try_lock(directory: Path, *, create: bool = False) -> int | None:
    """The directory's lock if its owner is gone (and the directory still exists), else None."""
    path = directory / LOCK
    try:
        fd = _open_lock(path, create=create)
    except FileNotFoundError:
        if create:
            raise
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # a successor that drained and removed the directory between our open and our flock leaves us
        # holding the lock of a deleted file: only a lock on the file still at `path` counts
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd


def orphan_candidates(root: Path, own: Path) -> list[Path]:
    """Journal directories under root other than ours; whether their owner is dead is `try_lock`'s call."""
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return []
    return [entry for entry in entries if entry != own and entry.is_dir() and (entry / LOCK).exists()]


def _open_lock(path: Path, *, create: bool) -> int:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    return os.open(path, flags, 0o640)


# -- segments and checkpoint ----------------------------------------------------------------------------
def segment_path(directory: Path, segment: int) -> Path:
    return directory / f"{_SEGMENT_PREFIX}{segment:012d}{_SEGMENT_SUFFIX}"


def segments(directory: Path) -> list[int]:
    numbers = []
    for path in directory.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}"):
        digits = path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)]
        if digits.isdigit():
            numbers.append(int(digits))
    return sorted(numbers)


def read_checkpoint(directory: Path) -> Position:
    """Where draining got to; the start when there is no checkpoint or it is unreadable (a full replay
    only re-offers rows the ledger already has)."""
    try:
        text = (directory / CHECKPOINT).read_bytes()
    except FileNotFoundError:
        return Position(0, 0)
    try:
        segment, offset, crc = text.split()
        if zlib.crc32(segment + b" " + offset) != int(crc, 16):
            raise ValueError("checksum mismatch")
        return Position(int(segment), int(offset))
    except ValueError as exc:
        log.warning("journal %s: unreadable checkpoint (%s); replaying it from the start", directory, exc)
        return Position(0, 0)


def write_checkpoint(directory: Path, position: Position, *, fsync: bool) -> None:
    """Durably: a crash leaves either the old checkpoint or the new one, never half of one."""
    body = b"%d %d" % (position.segment, position.offset)
    staging = directory / (CHECKPOINT + ".new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, b"%s %08x\n" % (body, zlib.crc32(body)))
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(staging, directory / CHECKPOINT)
    if fsync:
        sync_directory(directory)


def delete_segments_before(directory: Path, segment: int) -> None:
    # not synced: a deletion lost in a crash leaves a segment before the checkpoint, which is never read
    # again and goes with the next deletion
    for number in segments(directory):
        if number < segment:
            segment_path(directory, number).unlink(missing_ok=True)


def remove_journal(directory: Path) -> None:
    """Delete a drained journal directory, its lock file last. The caller holds the lock."""
    for number in segments(directory):
        segment_path(directory, number).unlink(missing_ok=True)
    for name in (CHECKPOINT, CHECKPOINT + ".new", LOCK):
        (directory / name).unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError as exc:  # a file we do not know: leave it for a human rather than delete it
        log.warning("journal %s drained but not removed: %s", directory, exc)


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading --------------------------------------------------------------------------------------------
def read_batch(directory: Path, start: Position, limit: int, end: Position | None) -> Batch:
    """Up to `limit` rows from `start` on. `end` is the live journal's durable end: the segment being
    appended to is read up to it, earlier segments to their last byte. None reads every segment whole
    (an orphan's, whose owner is dead)."""
    batch = Batch(start)
    for number in segments(directory):
        if number < batch.next.segment:
            continue
        if end is not None and number > end.segment:
            break
        offset = batch.next.offset if number == batch.next.segment else 0
        path = segment_path(directory, number)
        sealed = end is None or number < end.segment
        stop = written_end(path, offset) if end is None or sealed else end.offset
        offset = _read_segment(path, offset, stop, limit, batch)
        if not sealed or offset < stop:
            batch.next = Position(number, offset)
            return batch
        # a sealed segment read to its end: never appended to again, so the checkpoint can pass it
        batch.next = Position(number + 1, 0)
        if len(batch.rows) >= limit:
            return batch
    return batch


def written_end(path: Path, start: int) -> int:
    """Where a segment's written bytes end, from `start` on: a segment is allocated ahead, and its unwritten
    rest reads as zeros (a line never holds a NUL byte). Pages up to the end hold data and those after it only
    zeros, so the end is found from a dozen pages however large the segment, not by reading all of it."""
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size <= start:
            return size
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[size - 1] != 0:  # written to its last byte: filled, or never allocated ahead
                return size
            low, high = start // _PAGE, -(-size // _PAGE)  # the first page of zeros alone is in [low, high]
            while low < high:
                middle = (low + high) // 2
                if data[middle * _PAGE : (middle + 1) * _PAGE].strip(b"\0"):
                    low = middle + 1
                else:
                    high = middle
            begin = max(start, (low - 1) * _PAGE)
            return begin + len(data[begin : low * _PAGE].rstrip(b"\0"))


def _read_segment(path: Path, offset: int, stop: int, limit: int, batch: Batch) -> int:
    with path.open("rb") as file:
        file.seek(offset)
        for line in _lines(file, stop - offset):
            if not line.endswith(b"\n"):
                batch.damaged.append(Damage(path, offset, line, "torn last line"))
            else:
                try:
                    batch.rows.append(decode_line(line))
                except CorruptLine as exc:
                    batch.damaged.append(Damage(path, offset, line, str(exc)))
            offset += len(line)
            if len(batch.rows) >= limit:
                break
    return offset


def _lines(file: BinaryIO, size: int) -> Iterator[bytes]:
    while size > 0:
        line = file.readline(size)
        if not line:
            return
        size -= len(line)
        yield line


def report_damage(damaged: list[Damage]) -> None:
    """Log each damaged line once its batch is through, and keep the corrupt ones for a human."""
    for damage in damaged:
        where = f"journal {damage.segment} at byte {damage.offset}"
        if damage.torn:
            # the write of a process that died mid-line: never acknowledged to anyone
            log.warning("%s: ignoring a torn last line of %d bytes", where, len(damage.data))
            continue
        log.error("%s: corrupt line skipped (%s), kept in %s", where, damage.problem, QUARANTINE)
        # under the root: the journal directory itself is deleted once drained
        with contextlib.suppress(OSError), (damage.segment.parent.parent / QUARANTINE).open("ab") as file:
            file.write(b"%s %d %s" % (damage.segment.name.encode(), damage.offset, damage.data))
