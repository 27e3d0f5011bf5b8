"""Draining journals into the ledger: at least once into it, exactly once in it.

`LedgerWriter` reads durable rows back from the journal in batches, `add`s them to the ledger, then moves the
journal's checkpoint past them (fsync'ed) and deletes the segments it has passed. A crash between the `add`
and the checkpoint replays rows the ledger already holds, which its unique request id ignores. While the
database is down every row stays in the journal, on disk; the writer logs once, backs off, and retries
until the database answers again.

It also adopts orphans: the journal directories, under the same root, of processes that died (their lock is
free). Each is drained completely and then removed, so a killed worker's rows reach the ledger through its
successor or through any sibling that outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pricing.journal import Journal
from pricing.journal_files import (
    Batch,
    delete_segments_before,
    orphan_candidates,
    read_batch,
    read_checkpoint,
    remove_journal,
    report_damage,
    try_lock,
    write_checkpoint,
)
from pricing.journal_format import Position
from pricing.records import LedgerRow

__all__ = ["LedgerWriter", "RowSink", "WriterStats"]

log = logging.getLogger("tiergate.ledger")


class RowSink(Protocol):
    """Where drained rows go: `pricing.ledger.Ledger`. `add` must ignore rows it already holds."""

    async def add(self, rows: Sequence[LedgerRow]) -> int: ...


@dataclass(slots=True)
class WriterStats:
    drained: int = 0  # rows handed to the ledger, replays included
    added: int = 0  # rows that were new to it
    adopted: int = 0  # journal directories of dead processes drained and removed
    corrupt: int = 0  # lines that failed their checksum (quarantined)
    torn_bytes: int = 0
    failures: int = 0  # drain attempts that raised (database down, mostly)
    own: int = 0  # rows drained from this process's own journal (its backlog is appends - own)
    writes: int = 0  # batches added to the ledger
    write_seconds: float = 0.0  # their time, summed


class LedgerWriter:
    def __init__(
        self,
        journal: Journal,
        ledger: RowSink,
        *,
        batch: int = 500,
        interval_s: float = 0.2,
        retry_s: float = 0.5,
        max_retry_s: float = 30.0,
        adopt_interval_s: float = 60.0,
        close_timeout_s: float = 10.0,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self._journal = journal
        self._ledger = ledger
        self._batch = batch
        self._interval_s = interval_s
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._adopt_interval_s = adopt_interval_s
        self._close_timeout_s = close_timeout_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.stats = WriterStats()

    def start(self) -> None:
        """Run in the background: adopt orphans now and every `adopt_interval_s`, drain every `interval_s`
        (at once while there is a backlog)."""
        if self._task is not None:
            raise RuntimeError("this LedgerWriter is already started")
        self._task = asyncio.create_task(self._run(), name=f"ledger writer {self._journal.directory.name}")

    async def aclose(self) -> None:
        """Stop, after draining what the database takes within `close_timeout_s`. Rows it does not take
        stay in the journal for the next process. Call it before `Journal.aclose`."""
        self._stopping = True
        self._wake.set()
        try:
            async with asyncio.timeout(self._close_timeout_s):
                if self._task is not None:
                    await self._task
                await self._journal.flush()
                while await self.drain_once():
                    pass
        except Exception as exc:  # TimeoutError included: shutting down must not wait on a dead database
            log.warning(
                "ledger writer stopped with rows not yet in the ledger (%r); journal %s keeps them for the"
                " next process",
                exc,
                self._journal.directory,
            )
        finally:
            if self._task is not None and not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def drain_once(self) -> bool:
        """One batch from this process's journal into the ledger. True when the batch was full (more may
        be waiting). Raises what the ledger raised, with the rows still in the journal."""
        start = self._journal.checkpoint
        batch = await self._journal.read(start, self._batch)
        await self._store(batch)
        self.stats.own += len(batch.rows)
        if batch.next != start:
            await self._journal.advance(batch.next)
        return len(batch.rows) >= self._batch

    async def drain(self) -> None:
        """Everything durable in this process's journal now, into the ledger."""
        while await self.drain_once():
            pass

    async def adopt_orphans(self) -> int:
        """Drain and remove the journals of dead processes under this journal's root; return how many."""
        adopted = 0
        own = self._journal.directory
        for candidate in await asyncio.to_thread(orphan_candidates, self._journal.root, own):
            fd = await asyncio.to_thread(try_lock, candidate)
            if fd is None:
                continue  # alive, or being adopted by a sibling right now
            try:
                log.info("draining journal %s of a dead process", candidate)
                await self._drain_orphan(candidate)
                await asyncio.to_thread(remove_journal, candidate)
            finally:
                os.close(fd)
            adopted += 1
            self.stats.adopted += 1
        return adopted

    # -- internals --------------------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_adoption = loop.time()
        delay = self._retry_s
        failing_since: float | None = None
        while not self._stopping:
            try:
                if loop.time() >= next_adoption:
                    # scheduled before trying: an orphan that cannot be drained must not stop our own drain
                    next_adoption = loop.time() + self._adopt_interval_s
                    await self.adopt_orphans()
                more = await self.drain_once()
            except Exception as exc:
                self.stats.failures += 1
                if failing_since is None:
                    failing_since = loop.time()
                    log.error(
                        "cannot drain the journal into the ledger; rows stay on disk, retrying: %r", exc
                    )
                else:
                    log.debug("ledger still failing after %.1fs: %r", loop.time() - failing_since, exc)
                await self._sleep(delay)
                delay = min(delay * 2, self._max_retry_s)
                continue
            if failing_since is not None:
                log.warning("draining into the ledger again after %.1fs", loop.time() - failing_since)
                failing_since, delay = None, self._retry_s
                next_adoption = loop.time()  # orphans left waiting by the outage: now
            if not more:
                await self._sleep(self._interval_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _store(self, batch: Batch) -> None:
        if batch.rows:
            started = time.perf_counter()
            added = await self._ledger.add(batch.rows)
            self.stats.writes += 1
            self.stats.write_seconds += time.perf_counter() - started
            self.stats.drained += len(batch.rows)
            self.stats.added += added
        if batch.damaged:
            # reported once the batch is through: a batch retried after an outage is read again
            await asyncio.to_thread(report_damage, batch.damaged)
            self.stats.corrupt += sum(not damage.torn for damage in batch.damaged)
            self.stats.torn_bytes += sum(len(damage.data) for damage in batch.damaged if damage.torn)

    async def _drain_orphan(self, directory: Path) -> None:
        fsync = self._journal.fsync
        position: Position = await asyncio.to_thread(read_checkpoint, directory)
        while True:
            batch = await asyncio.to_thread(read_batch, directory, position, self._batch, None)
            await self._store(batch)
            if batch.next == position:
                return
            # checkpointed as we go: a successor of ours that dies mid-adoption is not replayed from zero
            await asyncio.to_thread(write_checkpoint, directory, batch.next, fsync=fsync)
            await asyncio.to_thread(delete_segments_before, directory, batch.next.segment)
            position = batch.next
