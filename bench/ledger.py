#!/usr/bin/env python3
"""The billing path's throughput: ledger ingest in batches, journal appends with group commit, and the two
together (journal drained into the ledger while requests append).

    python bench/ledger.py [--records 100000] [--batch 500] [--duration 2] [--postgres URL] [--quick]

Ledger ingest: `Ledger.add` in batches of `--batch` distinct rows into an empty ledger (new), then the same
rows again (replayed: every one a conflict, nothing stored), on SQLite (a file in a temporary directory) and
on PostgreSQL: a throwaway schema `tg_bench_<random>` in the `--postgres` database, dropped at the end
whatever happens; nothing else there is read or written. Also four concurrent writers on PostgreSQL (four
worker processes' LedgerWriters, here four tasks over a pool of four connections).

Journal: `Journal.append` with fsync on, from 1, 16, 64 and 256 concurrent tasks for `--duration` seconds
each, in a temporary directory on the same disk as the system's temp dir (use `--dir` for another): appends
per second, fsyncs, rows per fsync (the group commit), the process's CPU per append and append latency
percentiles. Two rows with fsync off (1 and 64 tasks) show what the disk costs.

Pipeline: 64 tasks append for `--duration` seconds while a LedgerWriter drains into each database; the
time from the last append until the ledger holds every row is the drain lag.

Target: ledger ingest of at least 20,000 records/s on each database. Prints one table plus PASS/FAIL and
writes JSON and markdown copies to bench/results/ledger-<timestamp>.{json,md}. Exit status: 0 when
everything ran, 1 with --strict when a target was missed, 2 when something failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from overheadkit.pgschema import PostgresSchema

from gateway.database import Database, Migration, open_database, redact_url
from pricing import Depth, LedgerRow, PriceBook, UsageRecord, rate
from pricing.journal import Journal
from pricing.journal_drain import LedgerWriter
from pricing.ledger import LEDGER_MIGRATIONS, Ledger

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_RECORDS_PER_S = 20_000
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
CONCURRENCIES = (1, 16, 64, 256)
START = datetime(2026, 1, 15, tzinfo=UTC)


@dataclass
class Result:
    bench: str
    backend: str
    detail: str
    records: int = 0
    seconds: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


# -- rows -----------------------------------------------------------------------------------------------
BOOK = PriceBook.from_mapping(
    {
        "currency": "USD",
        "versions": [
            {
                "effective_from": "2026-01-01",
                "prices": {
                    "fast": {"qwen3-8b": {"input": "0.05", "cached_input": "0.01", "output": "0.20"}},
                    "deliberate": {
                        "qwen3-8b": {
                            "input": "0.10",
                            "cached_input": "0.02",
                            "output": "0.60",
                            "reasoning": "0.60",
                            "request": "0.0001",
                            "depth_premium": "0.0005",
                        }
                    },
                },
            }
        ],
    }
)


def make_rows(count: int, prefix: str) -> list[LedgerRow]:
    """Realistic, all different: ten tenants, both tiers, varied counts, spread over a day."""
    rows = []
    for i in range(count):
        deliberate = i % 4 == 0
        prompt, completion = 200 + (i * 37) % 4000, 20 + (i * 13) % 900
        started = START + timedelta(milliseconds=i * 7)
        record = UsageRecord(
            request_id=f"{prefix}-{i:08d}",
            tenant=f"tenant-{i % 10}",
            key_id=f"key-{i % 50}",
            tier="deliberate" if deliberate else "fast",
            model="qwen3-8b",
            served_model="Qwen/Qwen3-8B",
            replica=f"http://10.0.0.{i % 8}:8000",
            endpoint="chat",
            prompt_tokens=prompt,
            cached_tokens=prompt // 3,
            completion_tokens=completion,
            reasoning_tokens=completion // 2 if deliberate else 0,
            estimated=False,
            depth=Depth(samples=3, floor=64, floor_met=i % 8 == 0, agreement=0.67) if deliberate else Depth(),
            outcome="ok",
            streamed=i % 2 == 0,
            started_at=started,
            first_token_at=started + timedelta(milliseconds=90),
            ended_at=started + timedelta(seconds=2),
        )
        rows.append(LedgerRow(record, rate(record, BOOK)))
    return rows


def percentiles(samples_s: Sequence[float]) -> tuple[float, float, float]:
    ordered = sorted(samples_s)
    if not ordered:
        return (0.0, 0.0, 0.0)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return at(0.50), at(0.99), ordered[-1] * 1000


# -- databases ------------------------------------------------------------------------------------------
async def migrated(url: str, *, pool_size: int = 4) -> Database:
    db = await open_database(url, pool_size=pool_size)
    await db.migrate(
        "ledger", [Migration(m.version, m.name, m.sqlite, m.postgresql) for m in LEDGER_MIGRATIONS]
    )
    return db


async def ingest(backend: str, url: str, rows: list[LedgerRow], batch: int, writers: int) -> list[Result]:
    db = await migrated(url, pool_size=max(4, writers))
    try:
        ledger = Ledger(db)
        batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]
        before = await ledger.total(None, START, START + timedelta(days=2))
        results = []
        for label, expect in (("new", len(rows)), ("replayed", 0)):
            added, elapsed, latencies = await timed_adds(ledger, batches, writers)
            if added != expect:
                raise RuntimeError(f"{backend}: add reported {added} new rows, not {expect} ({label})")
            p50, p99, worst = percentiles(latencies)
            detail = f"{label}, batches of {batch}" + (f", {writers} writers" if writers > 1 else "")
            results.append(Result("ledger ingest", backend, detail, len(rows), elapsed, p50, p99, worst))
        stored = await ledger.total(None, START, START + timedelta(days=2)) - before
        if stored != sum(row.charge.total for row in rows):
            raise RuntimeError(f"{backend}: the ledger's total {stored} is not the rows' total")
        return results
    finally:
        await db.aclose()


async def timed_adds(
    ledger: Ledger, batches: list[list[LedgerRow]], writers: int
) -> tuple[int, float, list[float]]:
    """(rows reported new, seconds, per-batch latencies) with `writers` tasks taking batches in turn."""
    latencies: list[float] = []
    queue = list(reversed(batches))

    async def writer() -> int:
        added = 0
        while queue:
            chunk = queue.pop()
            began = time.perf_counter()
            added += await ledger.add(chunk)
            latencies.append(time.perf_counter() - began)
        return added

    began = time.perf_counter()
    added = sum(await asyncio.gather(*(writer() for _ in range(writers))))
    return added, time.perf_counter() - began, latencies


# -- journal --------------------------------------------------------------------------------------------
async def appends(
    directory: Path, rows: list[LedgerRow], tasks: int, seconds: float, *, fsync: bool
) -> Result:
    journal = Journal(directory, fsync=fsync)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await journal.append(rows[i % len(rows)])
            latencies.append(time.perf_counter() - began)
            i += tasks

    began, cpu_began = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(offset) for offset in range(tasks)))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    await journal.aclose()
    p50, p99, worst = percentiles(latencies)
    syncs = journal.stats.batches
    detail = f"{tasks} concurrent, fsync {'on' if fsync else 'off'}"
    extra = {
        "fsyncs": syncs if fsync else 0,
        "rows_per_commit": round(len(latencies) / max(syncs, 1), 1),
        # the process's CPU, both of the journal's threads (the loop's and the writer's) and the kernel's
        # work for them: a commit's hand-over from the loop to the writer and back is most of it at 1 task
        "cpu_us_per_append": round(cpu / max(len(latencies), 1) * 1e6),
    }
    return Result("journal append", "disk", detail, len(latencies), elapsed, p50, p99, worst, extra)


async def pipeline(backend: str, url: str, directory: Path, rows: list[LedgerRow], seconds: float) -> Result:
    db = await migrated(url)
    journal = Journal(directory)
    writer = LedgerWriter(journal, Ledger(db), close_timeout_s=300)
    try:
        writer.start()
        appended = 0
        deadline = time.perf_counter() + seconds

        async def client(offset: int) -> None:
            nonlocal appended
            for i in range(offset, len(rows), 64):
                if time.perf_counter() >= deadline:
                    return
                await journal.append(rows[i])
                appended += 1

        began = time.perf_counter()
        await asyncio.gather(*(client(offset) for offset in range(64)))
        last_append = time.perf_counter()
        await writer.aclose()  # drains whatever is still in the journal, then stops
        done = time.perf_counter()
        if writer.stats.added != appended:
            raise RuntimeError(
                f"{backend}: {appended} rows appended, {writer.stats.added} reached the ledger"
            )
        extra = {
            "appends/s": round(appended / (last_append - began)),
            "drain lag after the last append ms": round((done - last_append) * 1000, 1),
        }
        return Result(
            "journal -> ledger", backend, "64 concurrent, fsync on", appended, done - began, extra=extra
        )
    finally:
        await journal.aclose()
        await db.aclose()


async def backlog(backend: str, url: str, directory: Path, rows: list[LedgerRow], batch: int) -> Result:
    """A journal full of rows (a database outage just ended): how fast does one LedgerWriter catch up?"""
    db = await migrated(url)
    journal = Journal(directory)
    try:
        for i in range(0, len(rows), 1000):
            await asyncio.gather(*(journal.append(row) for row in rows[i : i + 1000]))
        writer = LedgerWriter(journal, Ledger(db), batch=batch)
        began = time.perf_counter()
        await writer.drain()
        elapsed = time.perf_counter() - began
        if writer.stats.added != len(rows):
            raise RuntimeError(
                f"{backend}: {len(rows)} rows in the journal, {writer.stats.added} reached the ledger"
            )
        detail = f"backlog drained, batches of {batch}, checkpoint fsync on"
        return Result("journal -> ledger", backend, detail, len(rows), elapsed)
    finally:
        await journal.aclose()
        await db.aclose()


# -- running and reporting ------------------------------------------------------------------------------
async def run(args: argparse.Namespace, scratch: Path) -> list[Result]:
    print(f"building 4 x {args.records:,} ledger rows ...", flush=True)
    rows, more, streamed, stored = (make_rows(args.records, p) for p in ("bench", "four", "pipe", "backlog"))
    sqlite_url = f"sqlite:///{scratch / 'ledger.sqlite3'}"
    results = await step("SQLite ingest", ingest("sqlite", sqlite_url, rows, args.batch, 1))
    if args.postgres:
        schema = PostgresSchema(args.postgres)
        try:
            with schema as url:
                print(f"  (PostgreSQL: schema {schema.name} in {redact_url(args.postgres)})", flush=True)
                results += await step("PostgreSQL ingest", ingest("postgresql", url, rows, args.batch, 1))
                four = ingest("postgresql", url, more, args.batch, 4)
                results += await step("PostgreSQL ingest, 4 writers", four)
                piped = pipeline("postgresql", url, scratch / "journals-pg" / "j", streamed, args.duration)
                results += await step("PostgreSQL pipeline", _listed(piped))
                caught_up = backlog("postgresql", url, scratch / "backlog-pg" / "j", stored, args.batch)
                results += await step("PostgreSQL backlog", _listed(caught_up))
        except psycopg.Error as exc:
            results.append(Result("ledger ingest", "postgresql", "not run", error=f"PostgreSQL: {exc}"))
    pipe_url = f"sqlite:///{scratch / 'pipeline.sqlite3'}"
    piped = pipeline("sqlite", pipe_url, scratch / "journals-sqlite" / "j", streamed, args.duration)
    results += await step("SQLite pipeline", _listed(piped))
    caught_up = backlog("sqlite", pipe_url, scratch / "backlog-sqlite" / "j", stored, args.batch)
    results += await step("SQLite backlog", _listed(caught_up))
    journals = Path(tempfile.mkdtemp(prefix="tiergate-bench-journal-", dir=args.dir))
    try:
        for tasks in CONCURRENCIES:
            timed = appends(journals / f"c{tasks}", rows, tasks, args.duration, fsync=True)
            results += await step(f"journal appends, {tasks} tasks", _listed(timed))
        for tasks in (1, 64):
            timed = appends(journals / f"nosync{tasks}", rows, tasks, args.duration, fsync=False)
            results += await step(f"journal appends, {tasks} tasks, fsync off", _listed(timed))
    finally:
        shutil.rmtree(journals, ignore_errors=True)
    return results


async def _listed(result: Awaitable[Result]) -> list[Result]:
    return [await result]


async def step(name: str, work: Awaitable[list[Result]]) -> list[Result]:
    print(f"  {name} ...", flush=True)
    try:
        return await work
    except Exception as exc:  # reported in the table, and the exit status says so
        return [Result(name, "-", "failed", error=f"{type(exc).__name__}: {exc}")]


def checks(results: list[Result]) -> list[tuple[str, bool | None, str]]:
    found: list[tuple[str, bool | None, str]] = []
    for backend in ("sqlite", "postgresql"):
        rows = [
            r
            for r in results
            if r.bench == "ledger ingest" and r.backend == backend and r.detail.startswith("new")
        ]
        single = [r for r in rows if "writers" not in r.detail]
        if not single or single[0].error:
            found.append((f"{backend} ingest >= {TARGET_RECORDS_PER_S:,}/s", None, "not measured"))
            continue
        rate_ = single[0].per_s
        found.append(
            (
                f"{backend} ingest >= {TARGET_RECORDS_PER_S:,}/s",
                rate_ >= TARGET_RECORDS_PER_S,
                f"{rate_:,.0f}/s",
            )
        )
    return found


def table(results: list[Result], verdicts: list[tuple[str, bool | None, str]]) -> str:
    head = "| bench | backend | what | records | records/s | p50 ms | p99 ms | max ms | notes |"
    lines = [head, "|" + "---|" * 9]
    for r in results:

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        notes = r.error or ", ".join(f"{key} {value}" for key, value in r.extra.items())
        lines.append(
            f"| {r.bench} | {r.backend} | {r.detail} | {r.records:,} | {r.per_s:,.0f} | {ms(r.p50_ms)}"
            f" | {ms(r.p99_ms)} | {ms(r.max_ms)} | {notes} |"
        )
    lines.append("")
    for name, passed, detail in verdicts:
        verdict = "SKIP" if passed is None else ("PASS" if passed else "FAIL")
        lines.append(f"{verdict}  {name}: {detail}")
    return "\n".join(lines)


def save(results: list[Result], text: str, args: argparse.Namespace) -> list[Path]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = {
        "argv": sys.argv[1:],
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
    }
    data = {"meta": meta, "results": [asdict(r) | {"per_s": round(r.per_s)} for r in results]}
    json_path, md_path = RESULTS_DIR / f"ledger-{stamp}.json", RESULTS_DIR / f"ledger-{stamp}.md"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path.write_text(f"# bench/ledger.py {stamp}\n\n{text}\n")
    return [json_path, md_path]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=100_000, help="rows per ingest run (default 100000)")
    parser.add_argument("--batch", type=int, default=500, help="rows per Ledger.add (default 500)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per journal measurement")
    parser.add_argument(
        "--postgres", default=DEFAULT_POSTGRES, help="server for a throwaway schema; '' skips"
    )
    parser.add_argument("--dir", default=None, help="where journal files go (default: the temp dir)")
    parser.add_argument("--quick", action="store_true", help="20000 records, 1 s per journal measurement")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.duration = 20_000, 1.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tiergate-bench-ledger-") as tmp:
        try:
            results = asyncio.run(run(args, Path(tmp)))
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
    verdicts = checks(results)
    text = table(results, verdicts)
    print()
    print(text)
    for path in save(results, text, args):
        print(f"wrote {path}")
    if any(r.error for r in results):
        return 2
    if args.strict and any(passed is False for _, passed, _ in verdicts):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
