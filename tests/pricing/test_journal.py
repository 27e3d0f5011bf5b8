"""The journal on a real disk: durable appends, group commit, damaged lines, checkpoints, orphans."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import pricing.journal
import pricing.journal_segment
from pricing import LedgerRow
from pricing.journal import Journal, JournalClosed, JournalError, JournalLocked, Position
from pricing.journal_drain import LedgerWriter
from pricing.journal_files import QUARANTINE, Batch, read_batch, segment_path, segments, written_end
from pricing.journal_format import CorruptLine, decode_line, encode_line
from tests.pricing.factories import make_book, make_row

BOOK = make_book()
REAL_SYNC = pricing.journal_segment._sync


def row(request_id: str) -> LedgerRow:
    return make_row(BOOK, request_id=request_id, prompt_tokens=len(request_id) * 100, completion_tokens=7)


class MemoryLedger:
    """A ledger that keeps rows in a dict, idempotent like the real one; it remembers every offer."""

    def __init__(self) -> None:
        self.rows: dict[str, LedgerRow] = {}
        self.offered: list[str] = []

    async def add(self, rows: Sequence[LedgerRow]) -> int:
        self.offered += [r.record.request_id for r in rows]
        new = {r.record.request_id: r for r in rows if r.record.request_id not in self.rows}
        self.rows.update(new)
        return len(new)


def journal_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


async def append_failing(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    """Append the row "failed" while the disk refuses to sync: it must raise; the disk works again after."""

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(pricing.journal_segment, "_sync", failing)
    with pytest.raises(JournalError, match="not durable"):
        await journal.append(row("failed"))
    monkeypatch.setattr(pricing.journal_segment, "_sync", REAL_SYNC)


async def append_all(journal: Journal, ids: Sequence[str]) -> list[LedgerRow]:
    rows = [row(request_id) for request_id in ids]
    await asyncio.gather(*(journal.append(r) for r in rows))
    return rows


# -- the line format -----------------------------------------------------------------------------------
def test_lines_round_trip_and_check_themselves() -> None:
    original = row("fmt")
    line = encode_line(original)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_line(line) == original
    flipped = bytearray(line)
    flipped[40] ^= 0x01
    with pytest.raises(CorruptLine, match="checksum"):
        decode_line(bytes(flipped))
    with pytest.raises(CorruptLine, match="bytes"):
        decode_line(line[:30] + line[31:])
    with pytest.raises(CorruptLine):
        decode_line(b"not a journal line\n")


# -- appending -------------------------------------------------------------------------------------------
async def test_appended_rows_read_back_from_disk(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    rows = await append_all(journal, [f"a{i}" for i in range(20)])
    assert journal.committed > Position(1, 0)
    batch = await journal.read(journal.checkpoint, 1000)
    assert sorted(batch.rows, key=lambda r: r.record.request_id) == sorted(
        rows, key=lambda r: r.record.request_id
    )
    assert batch.next == journal.committed and batch.damaged == []
    assert journal.stats.appends == 20
    await journal.aclose()
    with pytest.raises(JournalClosed):
        await journal.append(row("late"))


async def test_durable_rows_are_read_from_memory_exactly_as_they_lie_on_disk(tmp_path: Path) -> None:
    line = len(encode_line(row("m00")))
    journal = Journal(tmp_path / "j", segment_bytes=line * 3)
    for i in range(7):  # one at a time, rotating segments
        await journal.append(row(f"m{i:02d}"))
    await append_all(journal, [f"g{i}" for i in range(5)])  # one group commit
    start = journal.checkpoint
    for limit in (1, 2, 3, 4, 8, 100):
        memory = await journal.read(start, limit)
        disk = read_batch(journal.directory, start, limit, journal.committed)
        assert (memory.rows, memory.next) == (disk.rows, disk.next)
    await journal.aclose()


async def test_a_ledger_far_behind_reads_from_disk_then_from_memory_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pricing.journal, "MEMORY_ROWS", 4)
    disk_reads: list[Position] = []

    def counted(directory: Path, start: Position, limit: int, end: Position | None) -> Batch:
        disk_reads.append(start)
        return read_batch(directory, start, limit, end)

    monkeypatch.setattr(pricing.journal, "read_batch", counted)
    journal = Journal(tmp_path / "j")
    ledger = MemoryLedger()
    writer = LedgerWriter(journal, ledger, batch=3)
    await append_all(journal, ["a0", "a1"])
    await writer.drain()
    assert sorted(ledger.rows) == ["a0", "a1"] and disk_reads == []  # from memory
    for i in range(6):  # the ledger does not drain: past MEMORY_ROWS, memory lets go
        await journal.append(row(f"b{i}"))
    await writer.drain()
    assert len(ledger.rows) == 8 and disk_reads  # from disk, every row once
    reads = len(disk_reads)
    await journal.append(row("c0"))
    await writer.drain()
    assert "c0" in ledger.rows and len(disk_reads) == reads  # caught up: from memory again
    assert journal.checkpoint == journal.committed
    await journal.aclose()
    assert not journal.directory.exists()  # fully drained


async def test_group_commit_syncs_far_less_than_once_per_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = record_sync_threads(monkeypatch)
    journal = Journal(tmp_path / "j")
    await append_all(journal, [f"g{i}" for i in range(500)])
    # one sync per group commit; the first row goes alone, the rest queue behind it
    assert 1 <= len(syncs) == journal.stats.batches <= 25
    assert len((await journal.read(journal.checkpoint, 1000)).rows) == 500
    await journal.aclose()


async def test_without_fsync_nothing_is_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int) -> None:
        raise AssertionError("synced")

    monkeypatch.setattr(pricing.journal_segment, "_sync", refuse)
    journal = Journal(tmp_path / "j", fsync=False)
    await append_all(journal, ["x", "y"])
    await journal.aclose()


async def test_a_failed_sync_fails_its_rows_and_the_journal_goes_on_in_a_new_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "j")
    await journal.append(row("before"))
    await append_failing(journal, monkeypatch)
    await journal.append(row("after"))
    assert journal.committed.segment == 2 and journal.stats.failures == 1
    ledger = MemoryLedger()
    await LedgerWriter(journal, ledger).drain()
    # the failed row was written, only its sync failed: at least once means it may still be billed
    assert {"before", "after"} <= set(ledger.rows) <= {"before", "failed", "after"}
    await journal.aclose()
    assert (tmp_path / "j").exists()  # a journal that failed a write is kept for a human to look at


# -- a lone request's row, written on the loop ------------------------------------------------------------
def record_sync_threads(monkeypatch: pytest.MonkeyPatch, delay_s: float = 0.0) -> list[int]:
    """The thread of every sync from now on (each waits `delay_s` first: a slow disk)."""
    threads: list[int] = []

    def recorded(fd: int) -> None:
        threads.append(threading.get_ident())
        time.sleep(delay_s)
        REAL_SYNC(fd)

    monkeypatch.setattr(pricing.journal_segment, "_sync", recorded)
    return threads


def record_count(into: list[int], items: list[int]) -> None:
    into.append(len(items))


async def lone_journal(path: Path, monkeypatch: pytest.MonkeyPatch, *, first: str = "first") -> Journal:
    """A journal whose every row is alone, on a disk that counts as quick, with its first row appended (on
    the journal's thread: the disk's speed is known from then on)."""
    monkeypatch.setattr(pricing.journal, "INLINE_WRITE_S", 3600.0)  # any disk is quick enough here
    journal = Journal(path, alone=lambda: True)
    await journal.append(row(first))
    return journal


def alone_when(flag: list[bool]) -> Callable[[], bool]:
    return lambda: flag[0]


async def test_a_lone_row_is_written_on_the_loop_and_kept_as_any_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pricing.journal, "INLINE_WRITE_S", 3600.0)  # any disk is quick enough here
    threads = record_sync_threads(monkeypatch)
    loop_thread = threading.get_ident()
    alone = [True]
    journal = Journal(tmp_path / "j", alone=alone_when(alone))
    await journal.append(row("first"))  # the disk's speed is not known yet: the journal's thread
    assert threads == [threads[0]] and threads[0] != loop_thread and journal.stats.on_loop == 0
    for i in range(3):
        await journal.append(row(f"lone{i}"))
    assert threads[1:] == [loop_thread] * 3 and journal.stats.on_loop == 3
    alone[0] = False  # others in flight: their rows group-commit on the journal's thread
    await append_all(journal, [f"busy{i}" for i in range(10)])
    assert loop_thread not in threads[4:] and journal.stats.on_loop == 3
    assert journal.stats.appends == 14 and journal.stats.batches == len(threads)
    start = journal.checkpoint
    memory = await journal.read(start, 100)
    disk = read_batch(journal.directory, start, 100, journal.committed)
    assert (memory.rows, memory.next) == (disk.rows, disk.next) and len(disk.rows) == 14
    ledger = MemoryLedger()
    await LedgerWriter(journal, ledger).drain()
    assert len(ledger.rows) == 14
    await journal.aclose()
    assert not journal.directory.exists()


async def test_a_slow_disk_sends_lone_rows_back_to_the_journals_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = record_sync_threads(monkeypatch, delay_s=pricing.journal.INLINE_WRITE_S * 10)
    loop_thread = threading.get_ident()
    journal = Journal(tmp_path / "j", alone=lambda: True)
    for i in range(5):
        await journal.append(row(f"slow{i}"))
    assert len(threads) == 5 and loop_thread not in threads and journal.stats.on_loop == 0
    threads = record_sync_threads(monkeypatch)  # quick again: its writes on the thread say so
    for i in range(200):
        await journal.append(row(f"quick{i}"))
        if journal.stats.on_loop:
            break
    assert threads[-1] == loop_thread and loop_thread not in threads[:-1]
    await journal.aclose()


async def test_a_failed_write_on_the_loop_fails_its_row_and_the_thread_writes_from_then_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = await lone_journal(tmp_path / "j", monkeypatch, first="before")
    await append_failing(journal, monkeypatch)
    assert journal.stats.failures == 1 and journal.stats.on_loop == 0
    threads = record_sync_threads(monkeypatch)
    await journal.append(row("after"))
    assert threads and threads[0] != threading.get_ident() and journal.stats.on_loop == 0
    assert journal.committed.segment == 2
    ledger = MemoryLedger()
    await LedgerWriter(journal, ledger).drain()
    assert {"before", "after"} <= set(ledger.rows) <= {"before", "failed", "after"}
    await journal.aclose()


async def test_a_lone_row_with_io_to_send_lets_it_leave_before_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = await lone_journal(tmp_path / "j", monkeypatch)
    threads = record_sync_threads(monkeypatch)
    loop = asyncio.get_running_loop()
    for sent in (False, True):
        syncs_before: list[int] = []
        loop.call_soon(functools.partial(record_count, syncs_before, threads))  # a settlement, kicked before
        before = len(threads)
        await journal.append(row(f"sent={sent}"), sent=sent)
        assert threads[-1] == threading.get_ident()  # on the loop either way
        # without `sent` the sync comes first; with it, what was ready ran before the sync
        assert syncs_before == ([before] if sent else [])
        await asyncio.sleep(0)
    assert journal.stats.on_loop == 2 and journal.stats.appends == 3
    await journal.aclose()


async def test_a_lone_row_cancelled_in_its_turn_is_written_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = await lone_journal(tmp_path / "j", monkeypatch)
    appending = asyncio.create_task(journal.append(row("cancelled"), sent=True))
    await asyncio.sleep(0)  # the append has started: it waits its one turn of the loop
    appending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await appending
    await journal.flush()  # the journal's thread took it
    ledger = MemoryLedger()
    await LedgerWriter(journal, ledger).drain()
    assert set(ledger.rows) == {"first", "cancelled"} and journal.stats.on_loop == 0
    await journal.aclose()


async def test_a_live_journal_directory_cannot_be_opened_twice(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    with pytest.raises(JournalLocked):
        Journal(tmp_path / "j")
    await journal.aclose()
    Journal(tmp_path / "j")  # released: the directory is free again


async def test_a_directory_left_without_its_lock_file_is_reused(tmp_path: Path) -> None:
    (tmp_path / "w0").mkdir()  # a removal cut short after the lock file went
    journal = Journal(tmp_path / "w0")
    await journal.append(row("reused"))
    with pytest.raises(JournalLocked):
        Journal(tmp_path / "w0")
    await journal.aclose()


async def test_rows_the_ledger_could_never_store_are_refused_before_the_disk(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    with pytest.raises(ValueError, match="NUL"):
        await journal.append(make_row(BOOK, request_id="bad\x00id"))
    assert journal.stats.batches == 0 and journal.committed == Position(1, 0)
    await journal.aclose()


async def test_in_root_names_a_fresh_directory_per_journal(tmp_path: Path) -> None:
    first, second = Journal.in_root(tmp_path), Journal.in_root(tmp_path)
    assert first.directory != second.directory and first.root == second.root == tmp_path
    assert str(os.getpid()) in first.directory.name
    await first.aclose()
    await second.aclose()


# -- draining -------------------------------------------------------------------------------------------
async def test_draining_checkpoints_and_a_restart_replays_only_what_follows(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "w0")
    await append_all(journal, [f"c{i:02d}" for i in range(10)])
    ledger = MemoryLedger()
    writer = LedgerWriter(journal, ledger, batch=4)
    assert await writer.drain_once() is True
    checkpoint = journal.checkpoint
    assert checkpoint > Position(1, 0) and len(ledger.rows) == 4
    await journal.aclose()  # stops with six rows undrained: the directory stays
    assert "checkpoint" in journal_files(tmp_path / "w0")

    again = Journal(tmp_path / "w0")  # the same name, reopened: a restarted worker with a fixed id
    assert again.checkpoint == checkpoint and again.committed.segment == 2
    await again.append(row("c10"))
    await LedgerWriter(again, ledger, batch=4).drain()
    assert ledger.offered == [
        f"c{i:02d}" for i in range(11)
    ]  # each offered once: no replay before the checkpoint
    await again.aclose()
    assert not (tmp_path / "w0").exists()  # drained: nothing left for anyone


async def test_a_crash_between_add_and_checkpoint_only_replays_rows_the_ledger_ignores(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j")
    rows = await append_all(journal, [f"r{i}" for i in range(6)])
    ledger = MemoryLedger()
    assert await ledger.add(rows[:3]) == 3  # stored, but the process died before its checkpoint
    writer = LedgerWriter(journal, ledger)
    await writer.drain()
    assert writer.stats.drained == 6 and writer.stats.added == 3
    assert sorted(ledger.rows) == [f"r{i}" for i in range(6)]
    await journal.aclose()


async def test_segments_rotate_and_drained_ones_are_deleted(tmp_path: Path) -> None:
    line = len(encode_line(row("s00")))
    journal = Journal(tmp_path / "j", segment_bytes=line * 3)
    for i in range(10):  # one at a time: each its own group commit
        await journal.append(row(f"s{i:02d}"))
    assert segments(journal.directory) == [1, 2, 3, 4]  # 3 + 3 + 3 + 1 rows
    ledger = MemoryLedger()
    writer = LedgerWriter(journal, ledger, batch=4)
    assert await writer.drain_once() is True
    assert segments(journal.directory) == [2, 3, 4]  # the first is fully drained
    await writer.drain()
    assert segments(journal.directory) == [4] and len(ledger.rows) == 10
    await journal.aclose()
    assert not journal.directory.exists()


async def test_a_torn_last_line_is_ignored_and_every_complete_line_kept(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "dead")
    rows = await append_all(journal, [f"t{i}" for i in range(5)])
    end = journal.committed.offset
    await journal.aclose()
    segment = segment_path(tmp_path / "dead", 1)
    torn = encode_line(row("torn"))[:-25]  # killed mid-write: no newline, the allocated zeros after it
    with segment.open("r+b") as file:
        file.seek(end)
        file.write(torn)

    survivor = Journal(tmp_path / "alive")
    ledger = MemoryLedger()
    writer = LedgerWriter(survivor, ledger)
    assert await writer.adopt_orphans() == 1
    assert sorted(ledger.rows) == sorted(r.record.request_id for r in rows)
    assert writer.stats.torn_bytes == len(torn) and writer.stats.corrupt == 0
    assert not (tmp_path / "dead").exists()
    await survivor.aclose()


async def test_a_segment_is_allocated_ahead_and_read_to_its_written_end(tmp_path: Path) -> None:
    line = len(encode_line(row("a00")))
    journal = Journal(tmp_path / "dead", segment_bytes=line * 100)
    await journal.append(row("a00"))
    await append_all(journal, [f"a{i:02d}" for i in range(1, 4)])
    segment = segment_path(journal.directory, 1)
    assert segment.stat().st_size == line * 100  # the size a row's sync no longer changes
    assert segment.read_bytes()[line * 4 :] == bytes(line * 96)
    await journal.aclose()
    disk = read_batch(tmp_path / "dead", Position(1, 0), 100, None)  # an orphan's: read whole
    assert [r.record.request_id for r in disk.rows] == ["a00", "a01", "a02", "a03"]
    assert disk.next == Position(2, 0) and not disk.damaged


def test_the_written_end_is_found_wherever_it_falls(tmp_path: Path) -> None:
    path = tmp_path / "segment"
    page = 4096
    for written in (0, 1, 700, page - 1, page, page + 1, 5 * page, 7 * page + 123, 16 * page):
        for allocated in (written, written + 1, 16 * page + 1, 40 * page):
            data = b"".join(b"%07d\n" % i for i in range(written // 8 + 1))[:written]
            path.write_bytes(data + bytes(max(0, allocated - written)))
            for start in (0, written // 2, written):
                assert written_end(path, start) == written, (written, allocated, start)
    path.write_bytes(b"torn, never ended" + bytes(3 * page))  # a killed writer's last bytes
    assert written_end(path, 0) == len(b"torn, never ended")


async def test_a_corrupt_line_is_detected_quarantined_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "dead")
    for i in range(5):
        await journal.append(row(f"k{i}"))
    await journal.aclose()
    segment = segment_path(tmp_path / "dead", 1)
    data = bytearray(segment.read_bytes())
    second = data.index(b"\n") + 1
    data[second + 60] ^= 0x20  # inside the second line's payload: its length still fits, its CRC does not
    segment.write_bytes(bytes(data))

    survivor = Journal(tmp_path / "alive")
    ledger = MemoryLedger()
    writer = LedgerWriter(survivor, ledger)
    with caplog.at_level(logging.ERROR, logger="tiergate.journal"):
        await writer.adopt_orphans()
    assert sorted(ledger.rows) == ["k0", "k2", "k3", "k4"]
    assert writer.stats.corrupt == 1
    assert any("checksum mismatch" in record.getMessage() for record in caplog.records)
    quarantined = (tmp_path / QUARANTINE).read_bytes()
    assert quarantined.startswith(b"segment-000000000001.log ") and quarantined.count(b"\n") == 1
    await survivor.aclose()


async def test_an_orphan_is_drained_from_its_checkpoint_on(tmp_path: Path) -> None:
    dead = Journal(tmp_path / "dead")
    await append_all(dead, [f"o{i:02d}" for i in range(10)])
    ledger = MemoryLedger()
    await LedgerWriter(dead, ledger, batch=4).drain_once()  # then the process died
    await dead.aclose()

    survivor = Journal(tmp_path / "alive")
    writer = LedgerWriter(survivor, ledger, batch=3)
    assert await writer.adopt_orphans() == 1
    assert ledger.offered == [f"o{i:02d}" for i in range(10)]  # the first four were not offered again
    assert writer.stats.adopted == 1 and writer.stats.added == 6
    await survivor.aclose()


async def test_only_dead_processes_journals_are_adopted(tmp_path: Path) -> None:
    alive = Journal(tmp_path / "alive")
    await alive.append(row("alive-1"))
    dead = Journal(tmp_path / "dead")
    await dead.append(row("dead-1"))
    await dead.aclose()  # undrained: left behind, its lock free
    (tmp_path / "not-a-journal").mkdir()

    me = Journal(tmp_path / "me")
    ledger = MemoryLedger()
    writer = LedgerWriter(me, ledger)
    assert await writer.adopt_orphans() == 1
    assert sorted(ledger.rows) == ["dead-1"]
    assert journal_files(tmp_path) == ["alive", "me", "not-a-journal"]
    for journal in (alive, me):
        await journal.aclose()


async def test_the_background_writer_drains_and_closes_drained(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    ledger = MemoryLedger()
    writer = LedgerWriter(journal, ledger, batch=50, interval_s=0.01)
    writer.start()
    await append_all(journal, [f"b{i:03d}" for i in range(120)])
    for _ in range(200):
        if len(ledger.rows) == 120:
            break
        await asyncio.sleep(0.01)
    assert len(ledger.rows) == 120
    await append_all(journal, ["last"])  # drained by aclose, not by the loop
    await writer.aclose()
    assert "last" in ledger.rows and len(ledger.offered) == 121
    await journal.aclose()
    assert not journal.directory.exists()
