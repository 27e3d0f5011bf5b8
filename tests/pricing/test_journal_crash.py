"""The crash test: processes killed with SIGKILL mid-flight lose no acknowledged row, and invent none.

Each child appends rows as fast as it can from many tasks, draining into a SQLite ledger at the same time
(and adopting the journals its killed predecessors left), and prints each request id right after its
`append` returned: that is the moment a response would complete. It is killed at a random moment. At the
end one more process drains whatever is left. Every printed id must then be in the ledger exactly once,
with the row that was appended, and the ledger must hold nothing that was never appended.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from gateway.database import Database, Migration, open_database
from pricing import LedgerRow
from pricing.journal import Journal
from pricing.journal_drain import LedgerWriter
from pricing.ledger import LEDGER_MIGRATIONS, Ledger
from tests.pricing.factories import JAN, make_book, make_row

ROOT = Path(__file__).parents[2]
BOOK = make_book()
WORKERS = 32
RUNS = 5


def crash_row(request_id: str) -> LedgerRow:
    """The row for an id, the same in the child that appends it and in the test that checks it."""
    n = int(request_id.rsplit("-", 1)[1])
    return make_row(BOOK, request_id=request_id, prompt_tokens=n % 4000, completion_tokens=n % 300)


async def migrated(url: str) -> Database:
    db = await open_database(url)
    await db.migrate(
        "ledger", [Migration(m.version, m.name, m.sqlite, m.postgresql) for m in LEDGER_MIGRATIONS]
    )
    return db


async def child_main(root: str, url: str, run: int) -> None:
    """The child's whole life: it never ends on its own, SIGKILL ends it."""
    db = await migrated(url)
    journal = Journal.in_root(Path(root))
    writer = LedgerWriter(journal, Ledger(db), batch=200, interval_s=0.005)
    writer.start()  # adopts the journals of the children killed before this one
    out = sys.stdout.fileno()

    async def worker(w: int) -> None:
        n = 0
        while True:
            request_id = f"{run}-{w}-{n}"
            await journal.append(crash_row(request_id))
            os.write(out, f"{request_id}\n".encode())  # the response completed
            n += 1

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))


CHILD = "import asyncio, sys; from tests.pricing.test_journal_crash import child_main; asyncio.run(child_main(*sys.argv[1:3], int(sys.argv[3])))"  # noqa: E501


def run_and_kill(root: Path, url: str, run: int, output: Path, rng: random.Random) -> None:
    with output.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), url, str(run)], cwd=ROOT, stdout=out
        )
    try:
        deadline = time.monotonic() + 10
        while output.stat().st_size == 0:  # appending has begun
            assert child.poll() is None, f"child {run} exited with {child.returncode}"
            assert time.monotonic() < deadline, f"child {run} never appended"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.02, 0.6))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL


def acknowledged(output: Path) -> list[str]:
    # a line without its newline was being printed when the kill came: its append had returned, but keep
    # only whole lines: a cut id would be a different id
    return output.read_text().split("\n")[:-1]


def test_sigkill_at_random_moments_loses_no_acknowledged_row_and_adds_none(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    root, url = tmp_path / "journals", f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    printed: list[str] = []
    for run in range(RUNS):
        output = tmp_path / f"run{run}.out"
        run_and_kill(root, url, run, output, rng)
        printed += acknowledged(output)
    assert len(printed) > 1000, f"only {len(printed)} appends acknowledged: the children barely ran"

    stored = asyncio.run(drain_everything(root, url))

    context = f"(seed {seed})"
    assert len(printed) == len(set(printed)), context
    missing = set(printed) - set(stored)
    assert not missing, f"{len(missing)} acknowledged rows lost, e.g. {sorted(missing)[:5]} {context}"
    # nothing invented: a worker appends one row at a time, so beyond its last acknowledged row the
    # ledger may hold at most the one whose append was in flight when the kill came
    last: dict[tuple[int, int], int] = defaultdict(lambda: -1)
    for request_id in printed:
        run, w, n = map(int, request_id.split("-"))
        last[run, w] = max(last[run, w], n)
    for request_id in stored:
        run, w, n = map(int, request_id.split("-"))
        assert 0 <= run < RUNS and 0 <= w < WORKERS and n <= last[run, w] + 1, f"{request_id} {context}"
    for request_id, row in stored.items():
        assert row == crash_row(request_id), f"{request_id} stored differently from appended {context}"
    assert not root.exists() or os.listdir(root) == [], f"journals left behind: {os.listdir(root)} {context}"


async def drain_everything(root: Path, url: str) -> dict[str, LedgerRow]:
    db = await migrated(url)
    try:
        journal = Journal.in_root(root)
        ledger = Ledger(db)
        writer = LedgerWriter(journal, ledger)
        await writer.adopt_orphans()
        await writer.aclose()
        await journal.aclose()
        rows = {}
        async for row in ledger.rows(None, JAN, JAN.replace(year=JAN.year + 1), batch=5000):
            assert row.record.request_id not in rows
            rows[row.record.request_id] = row
        found = await db.fetch_one("SELECT COUNT(*) AS n FROM ledger")
        assert found is not None and int(found["n"]) == len(rows)  # every row is in the period read
        return rows
    finally:
        await db.aclose()
