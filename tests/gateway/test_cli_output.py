"""What the `tiergate` commands print, run as a user runs them: tables with headers (plain when piped, ruled
on a terminal), progress bars only on a terminal, an export's summary and its failure when all was skipped, a
closed pipe, and a busy port."""

from __future__ import annotations

import asyncio
import csv
import json
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.accounting.bookkeeper import ledger_migrations
from gateway.database import open_database
from gateway.keys import KeyStore
from gateway.probes.cli import table
from gateway.probes.tasks import ProbeResult
from gateway.terminal import BROKEN_PIPE_EXIT
from pricing import Ledger, format_micros, load_price_book
from tests.pricing.factories import make_row
from tests.processes import TIERGATE, free_port, run_on_terminal
from tests.tables import read_table

BOOK = Path(__file__).parents[2] / "gateway" / "prices.yaml"
NOVEMBER = datetime(2026, 11, 5, tzinfo=UTC)


def billing_config(tmp_path: Path, extra: str = "") -> tuple[Path, str]:
    database_url = f"sqlite:///{tmp_path / 'tiergate.sqlite3'}"
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        "pools: {fast: {replicas: ['http://127.0.0.1:9']}}\n"
        "models: {qwen3-8b: {tiers: {fast: {pool: fast}, deliberate: {pool: fast}}}}\n"
        f"pricing: {{book: '{BOOK}'{extra}}}\ndatabase: {{url: '{database_url}'}}\n"
    )
    return config, database_url


def fill_ledger(database_url: str, tenants: list[str]) -> list[int]:
    """One November row per tenant given; their charges in micros."""
    book = load_price_book(BOOK)
    rows = [
        make_row(book, tenant=tenant, started_at=NOVEMBER, prompt_tokens=1000 * i, completion_tokens=300 * i)
        for i, tenant in enumerate(tenants, start=1)
    ]

    async def fill() -> None:
        database = await open_database(database_url)
        await database.migrate("ledger", ledger_migrations())
        assert await Ledger(database).add(rows) == len(rows)
        await database.aclose()

    asyncio.run(fill())
    return [row.charge.total for row in rows]


def tiergate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TIERGATE, *args], capture_output=True, text=True, timeout=60)


def test_an_export_says_what_it_wrote_and_fails_when_it_skipped_everything(tmp_path: Path) -> None:
    config, database_url = billing_config(tmp_path)
    charges = fill_ledger(database_url, ["acme", "acme", "acme", "globex"])
    period = ("--period", "2026-11", "--config", str(config))

    exported = tiergate("bill", "export", "--format", "csv", *period)
    assert exported.returncode == 0, exported.stderr
    assert len({line["request_id"] for line in csv.DictReader(exported.stdout.splitlines())}) == 4
    assert exported.stderr == (
        f"tiergate bill export: 4 rows written, total {format_micros(sum(charges))} USD; 0 rows skipped\n"
    )

    # no pricing.stripe_customers: every row skipped, so nothing written, a non-zero exit and one line
    out = tmp_path / "stripe.jsonl"
    stripe = tiergate("bill", "export", "--format", "stripe", "--output", str(out), *period)
    assert stripe.returncode == 1
    assert stripe.stderr.count("\n") == 1 and "Traceback" not in stripe.stderr
    assert "nothing written, all 4 rows skipped" in stripe.stderr
    assert "pricing.stripe_customers is not set" in stripe.stderr
    assert not out.exists() and stripe.stdout == ""

    # acme mapped: its rows written, globex's skipped and counted
    config, _ = billing_config(tmp_path, ", stripe_customers: {acme: cus_123}")
    mapped = tiergate("bill", "export", "--format", "stripe", "--output", str(out), *period)
    assert mapped.returncode == 0, mapped.stderr
    assert [json.loads(line)["payload[stripe_customer_id]"] for line in out.read_text().splitlines()] == [
        "cus_123"
    ] * 3
    assert f"3 rows written to {out}, total {format_micros(sum(charges[:3]))} USD" in mapped.stderr
    assert f"1 rows skipped ({format_micros(charges[3])} USD: their tenant is not in" in mapped.stderr


def test_an_invoice_is_a_table_and_json(tmp_path: Path) -> None:
    config, database_url = billing_config(tmp_path)
    charges = fill_ledger(database_url, ["acme", "acme"])
    args = ("bill", "invoice", "--tenant", "acme", "--period", "2026-11", "--config", str(config))
    shown = tiergate(*args)
    assert shown.returncode == 0, shown.stderr
    heading, *body, total = shown.stdout.splitlines()
    assert heading == "invoice for acme, 2026-11: 2 requests"
    lines = read_table("\n".join(body))
    assert {line["kind"] for line in lines} >= {"input", "output"}
    assert all(line["tier"] == "fast" and line["model"] == "qwen3-8b" for line in lines)
    assert total == f"total {format_micros(sum(charges))} USD"
    assert shown.stderr == ""  # no progress bar off a terminal
    assert json.loads(tiergate(*args, "--json").stdout)["total_micros"] == sum(charges)


def test_on_a_terminal_a_ruled_table_and_a_progress_bar(tmp_path: Path) -> None:
    config, database_url = billing_config(tmp_path)
    fill_ledger(database_url, ["acme", "acme", "acme"])
    code, output = run_on_terminal(
        [*TIERGATE, "bill", "invoice", "--tenant", "acme", "--period", "2026-11", "--config", str(config)]
    )
    assert code == 0, output
    assert "invoice acme" in output and "3/3" in output  # the bar, at its end: every row read
    assert "\x1b[1m" in output and "─" in output  # a bold header over a rule
    assert "invoice for acme, 2026-11: 3 requests" in output


def test_json_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    config, database_url = billing_config(tmp_path)

    async def tenants() -> None:
        database = await open_database(database_url)
        store = KeyStore(database)
        await store.migrate()
        for number in range(600):  # ~250 kB of JSON: far more than a pipe holds, so the write must fail
            await store.create_tenant(f"tenant-{number:04}", "n" * 300)
        await database.aclose()

    asyncio.run(tenants())
    command = " ".join([*TIERGATE, "tenants", "list", "--json", "--config", str(config)])
    piped = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | head -1"], capture_output=True, text=True, timeout=60
    )
    assert piped.stdout == "[\n"
    assert piped.stderr == ""  # no traceback, no "Exception ignored" at exit
    assert piped.returncode == BROKEN_PIPE_EXIT  # 128 + SIGPIPE, as `cat` cut off by `head` reports
    whole = tiergate("tenants", "list", "--json", "--config", str(config))
    assert whole.returncode == 0 and len(json.loads(whole.stdout)) == 600


def test_demo_on_a_busy_port_says_so_in_one_line_and_starts_nothing() -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        demo = tiergate("demo", "--port", str(port))
    assert demo.returncode == 1
    assert demo.stderr == f"tiergate demo: port {port} is busy: use --port N\n"
    assert demo.stdout == ""  # no banner


def test_probe_results_are_a_table_with_headers() -> None:
    result = ProbeResult(
        model="qwen3-8b",
        tier="deliberate",
        effort=None,
        tasks=2,
        answered=2,
        refused=0,
        errored=0,
        correct=1,
        retries=0,
        cost_micros=1_500,
        reasoning_tokens=800,
        seconds=1.0,
    )
    (row,) = read_table(table([result]))
    assert row == {
        "model": "qwen3-8b",
        "tier": "deliberate",
        "effort": "-",
        "answered": "2",
        "refused": "0",
        "errored": "0",
        "accuracy": "50.0%",
        "reasoning": "400",
        "cost": "0.001500",
        "per right": "0.001500",  # 1,500 micros for one right answer,
    }


@pytest.mark.parametrize("listing", [["tenants", "list"], ["keys", "list"], ["engines", "profiles"]])
def test_every_listing_has_json(tmp_path: Path, listing: list[str]) -> None:
    config, _ = billing_config(tmp_path)
    extra = [] if listing[0] == "engines" else ["--config", str(config)]
    done = tiergate(*listing, "--json", *extra)
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), list)
    plain = tiergate(*listing, *extra)
    assert plain.stdout.splitlines()[0].split()[0] in ("id", "profile")  # the header, first
