"""The local write-ahead journal: a usage row is on disk before its response completes.

`append` returns once the row is written and fsync'ed. Appends are group-committed: whatever rows arrive
while one batch is being written and synced go out together in the next, with one write and one fsync, on a
thread of the journal's own, so the event loop does not wait on the disk while others are served, and a
thousand concurrent requests cost a handful of fsyncs, not a thousand. Each row costs its caller at most two
fsyncs of latency.

A row whose request is alone (the `alone` callable says so) is written and synced on the loop itself, when
the disk's recent writes took under `INLINE_WRITE_S`: nobody else is waiting on the loop then, and the two
hand-overs to the journal's thread and back cost more than the sync (as PostgreSQL's `commit_siblings`
groups commits only when other transactions are in flight). A disk that slows down sends rows back to the
thread at once, and its writes there say when it is quick again.

Rows are drained into the ledger by `pricing.journal_drain.LedgerWriter`, which reads them (`read`) and
records how far it got (`advance`). The rows made durable since the last `advance` are kept in memory, up to
`MEMORY_ROWS`, and read from there: a row is encoded once, on its way to disk, and decoded only when it must
be read back from disk - after a restart (an orphan), or once the ledger has fallen so far behind that memory
let go of them. The disk stays the record: memory holds only rows already durable, and positions in the
journal's segments are the same either way.

One journal directory per process, locked for the process's life (`pricing.journal_files`). `Journal.in_root`
names a fresh one under a shared root, where a successor finds and drains the directories of dead processes.
A crash (of the process, or with fsync on, of the machine) loses nothing acknowledged: every acknowledged row
is in a complete, checksummed line, and a torn last line was never acknowledged. The converse does not hold:
a row whose append raised or was cancelled may still reach the ledger. Rows are never lost; at worst one is
billed although its caller heard that it failed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import socket
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pricing.journal_files import (
    Batch,
    JournalLocked,
    create_locked,
    delete_segments_before,
    read_batch,
    read_checkpoint,
    remove_journal,
    segments,
    write_checkpoint,
)
from pricing.journal_format import Position, encode_line
from pricing.journal_segment import SegmentWriter
from pricing.ledger import check_storable
from pricing.records import LedgerRow

__all__ = [
    "MEMORY_ROWS",
    "Batch",
    "Journal",
    "JournalClosed",
    "JournalError",
    "JournalLocked",
    "JournalStats",
    "Position",
]

DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
MEMORY_ROWS = 4096  # durable rows kept in memory for the ledger writer (about 1 KB each), at most
# a lone row is written on the loop while the disk's writes (with their sync) take under this, on average
INLINE_WRITE_S = 0.001
_Queued = tuple[bytes, LedgerRow | None, "asyncio.Future[None]"]  # a line to write, its row, its waiter


class JournalError(Exception):
    """A row could not be made durable (the disk refused the write or the sync): it is not acknowledged."""


class JournalClosed(JournalError):
    pass


@dataclass(slots=True)
class JournalStats:
    appends: int = 0
    batches: int = 0  # group commits: one write (and, with fsync on, one fsync) each
    on_loop: int = 0  # of those, the lone rows written on the event loop
    bytes: int = 0
    failures: int = 0  # batches the disk refused


class Journal:
    def __init__(
        self,
        directory: Path,
        *,
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        alone: Callable[[], bool] | None = None,
    ) -> None:
        """`alone`: True while the appending request is the only one in flight (its row may then be written
        on the loop, see the module's doc); None: every row goes through the journal's thread."""
        if segment_bytes < 1:
            raise ValueError(f"segment_bytes must be positive, not {segment_bytes}")
        self.directory = directory
        self.fsync = fsync
        self.stats = JournalStats()
        self._lock_fd = create_locked(directory, fsync=fsync)
        try:
            # a directory we take over (a fixed name reused after a crash) keeps its segments; we never
            # append after a possibly torn tail, so writing starts in a new segment
            existing = segments(directory)
            first = max(existing, default=0) + 1
            # with no segment left, nothing precedes the first one we write: all of it is drained
            self._checkpoint = read_checkpoint(directory) if existing else Position(first, 0)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._segment = SegmentWriter(directory, first, fsync=fsync, segment_bytes=segment_bytes)
        self._committed = Position(first, 0)
        # the durable rows from `_kept_from` on, each with the position after it, while memory keeps them
        self._kept: deque[tuple[Position, LedgerRow]] = deque()
        self._kept_from: Position | None = self._committed if self._checkpoint == self._committed else None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiergate-journal")
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self._failed = False
        self._closed = False
        self._alone = alone

    @classmethod
    def in_root(
        cls,
        root: Path,
        *,
        name: str | None = None,
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        alone: Callable[[], bool] | None = None,
    ) -> Journal:
        """A journal of this process's own under `root`, by default freshly named: host, pid and a random
        part, so that a restarted process never mistakes a predecessor's directory for its own."""
        name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        return cls(root / name, fsync=fsync, segment_bytes=segment_bytes, alone=alone)

    def __repr__(self) -> str:
        return f"Journal({str(self.directory)!r})"

    @property
    def root(self) -> Path:
        return self.directory.parent

    @property
    def committed(self) -> Position:
        """The durable end: every row before it was acknowledged."""
        return self._committed

    @property
    def checkpoint(self) -> Position:
        """How far the rows are known to be in the ledger."""
        return self._checkpoint

    async def append(self, row: LedgerRow, *, sent: bool = False) -> None:
        """Return once the row is durable; JournalError if it could not be made so, ValueError (at once)
        if the ledger could never store it.

        `sent`: the caller has I/O of its own ready to leave (settlements): a row about to be synced on the
        loop first lets the loop turn once, so that I/O is on its way while the disk syncs. Cancelled in
        that turn, the row is queued for the journal's thread all the same: an appended row is never lost."""
        check_storable(row)
        line = encode_line(row)
        if sent and self._inline():
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                if not self._closed:
                    self._queue_line(line, row).add_done_callback(_seen)
                    self.stats.appends += 1
                raise
        await self._enqueue(line, row)
        self.stats.appends += 1

    async def flush(self) -> None:
        """Wait until every row appended so far is durable (or has failed)."""
        if self._queue or self._flusher is not None:
            await self._enqueue(b"", None)

    async def read(self, start: Position, limit: int) -> Batch:
        """Up to `limit` durable rows from `start` on: from memory when it holds them, else from disk."""
        if start == self._kept_from:
            batch = Batch(start)
            for end, row in itertools.islice(self._kept, limit):
                batch.rows.append(row)
                batch.next = end
            return batch
        return await asyncio.to_thread(read_batch, self.directory, start, limit, self._committed)

    async def advance(self, position: Position) -> None:
        """Record durably that every row before `position` is in the ledger, and delete the segments that
        holds entirely."""
        if position <= self._checkpoint:
            return
        if position > self._committed:
            raise ValueError(f"cannot checkpoint {position}: the journal is durable up to {self._committed}")
        await asyncio.to_thread(_advance, self.directory, position, self.fsync)
        self._checkpoint = position
        kept = self._kept
        while kept and kept[0][0] <= position:
            kept.popleft()
        if self._kept_from is not None and position >= self._kept_from:
            self._kept_from = position if kept or position == self._committed else None
        elif position == self._committed and not self._failed:  # caught up: memory serves again from here
            self._kept_from = position

    async def aclose(self) -> None:
        """Finish pending appends and release the directory. A fully drained journal is deleted; one with
        rows not yet in the ledger stays, for the next process to drain."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush()
            await asyncio.get_running_loop().run_in_executor(self._executor, self._segment.close)
            self._executor.shutdown(wait=True)
            if self._checkpoint >= self._committed and not self._failed:
                await asyncio.to_thread(remove_journal, self.directory)
        finally:
            os.close(self._lock_fd)  # from here on, any successor may adopt what is left

    # -- group commit ---------------------------------------------------------------------------------
    async def _enqueue(self, line: bytes, row: LedgerRow | None) -> None:
        if self._closed and line:
            raise JournalClosed(f"{self!r} is closed")
        if line and self._inline():
            self._write_now(line, row)
            return
        await self._queue_line(line, row)

    def _inline(self) -> bool:
        """Whether a row appended now is written on the loop: the request is alone and the disk is quick."""
        return (
            self._flusher is None  # the thread is idle (nothing queued or being written): the segment is ours
            and self._alone is not None
            and not self._failed  # a write cut short may still run on the thread: it keeps the segment
            and (took := self._segment.write_s) is not None
            and took < INLINE_WRITE_S
            and self._alone()
        )

    def _queue_line(self, line: bytes, row: LedgerRow | None) -> asyncio.Future[None]:
        """The line queued for the journal's thread; the future is done when it is durable."""
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append((line, row, waiter))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name=f"journal flush {self.directory.name}")
        return waiter

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # whatever queued up during one write goes out in the next: that is the group commit
            while self._queue:
                batch, self._queue = self._queue, []
                data = b"".join(line for line, _, _ in batch)
                try:
                    if data:
                        begin = self._committed
                        self._committed = await loop.run_in_executor(
                            self._executor, self._segment.write, data
                        )
                        self._written(begin, data, [(line, row) for line, row, _ in batch])
                except BaseException as exc:  # cancelled too: the waiters must not wait forever
                    error = self._failure(exc)
                    for _, _, waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(error)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for _, _, waiter in batch:
                    if not waiter.done():  # a caller that was cancelled is no longer waiting
                        waiter.set_result(None)
        finally:
            self._flusher = None

    def _write_now(self, line: bytes, row: LedgerRow | None) -> None:
        """One row, written and synced on the calling thread (the journal's thread is idle)."""
        begin = self._committed
        try:
            self._committed = self._segment.write(line)
        except OSError as exc:
            raise self._failure(exc) from exc
        self._written(begin, line, [(line, row)])
        self.stats.on_loop += 1

    def _written(self, begin: Position, data: bytes, lines: list[tuple[bytes, LedgerRow | None]]) -> None:
        self.stats.batches += 1
        self.stats.bytes += len(data)
        self._keep(begin, lines)

    def _failure(self, exc: BaseException) -> JournalError:
        self._failed = True
        self._forget()  # the segment's tail is unknown: from here on rows are read from disk
        self.stats.failures += 1
        return JournalError(f"{self!r}: rows not durable: {exc!r}")

    def _keep(self, begin: Position, batch: list[tuple[bytes, LedgerRow | None]]) -> None:
        """Keep the rows of a batch just written at `begin` (ending at `_committed`), while memory serves."""
        if self._kept_from is None:
            return
        if len(self._kept) + len(batch) > MEMORY_ROWS:
            self._forget()  # the ledger is far behind: it reads from disk until it catches up
            return
        offset = begin.offset
        for line, row in batch:
            if row is not None:
                offset += len(line)
                self._kept.append((Position(begin.segment, offset), row))
        if self._kept:  # the last row ends where the write did (in the next segment, if it sealed this one)
            self._kept[-1] = (self._committed, self._kept[-1][1])

    def _forget(self) -> None:
        self._kept.clear()
        self._kept_from = None


def _advance(directory: Path, position: Position, fsync: bool) -> None:
    write_checkpoint(directory, position, fsync=fsync)
    delete_segments_before(directory, position.segment)


def _seen(waiter: asyncio.Future[None]) -> None:
    """Nobody awaits this row any more: its failure is the journal's to report (`stats.failures`)."""
    if not waiter.cancelled():
        waiter.exception()
