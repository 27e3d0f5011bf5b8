"""The ledger on real SQLite files and real PostgreSQL schemas: exactly once, sums, keyset pagination."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.database import Database, Migration, open_database
from pricing import Depth, LedgerRow
from pricing.ledger import (
    _COLUMNS,
    LEDGER_MIGRATIONS,
    ROWS_PER_STATEMENT,
    Ledger,
    LedgerTotal,
    check_storable,
)
from pricing.ledger_rows import row_values
from tests.pricing.factories import JAN, make_book, make_row

BOOK = make_book()


def migrations() -> list[Migration]:
    """What the gateway does with the ledger's plain-data migrations."""
    return [Migration(m.version, m.name, m.sqlite, m.postgresql) for m in LEDGER_MIGRATIONS]


@pytest.fixture
async def ledger(database: Database) -> Ledger:
    assert await database.migrate("ledger", migrations()) == [m.version for m in LEDGER_MIGRATIONS]
    return Ledger(database)


def row(request_id: str, **overrides: Any) -> LedgerRow:
    return make_row(BOOK, request_id=request_id, **overrides)


async def count(db: Database) -> int:
    found = await db.fetch_one("SELECT COUNT(*) AS n FROM ledger")
    assert found is not None
    return int(found["n"])


# -- exactly once ---------------------------------------------------------------------------------------
async def test_add_counts_new_rows_and_ignores_replays(ledger: Ledger, database: Database) -> None:
    rows = [row(f"r{i}", prompt_tokens=100 * i, completion_tokens=10 * i) for i in range(10)]
    assert await ledger.add(rows) == 10
    assert await ledger.add(rows) == 0
    # overlapping: five old, five new
    more = [row(f"r{i}", prompt_tokens=100 * i, completion_tokens=10 * i) for i in range(5, 15)]
    assert await ledger.add(more) == 5
    assert await count(database) == 15
    assert await ledger.add([]) == 0


async def test_a_replay_is_silent(ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    rows = [row(f"q{i}", prompt_tokens=10 * i) for i in range(4)]
    await ledger.add(rows[:2])
    with caplog.at_level(logging.WARNING, logger="tiergate.ledger"):
        assert await ledger.add(rows) == 2
    assert ledger.clashes == 0 and caplog.records == []


async def test_a_reused_id_never_changes_the_stored_row_and_is_reported(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    first = row("same", prompt_tokens=1000, completion_tokens=10)
    assert await ledger.add([first]) == 1
    different = row("same", prompt_tokens=5, completion_tokens=5)
    with caplog.at_level(logging.ERROR, logger="tiergate.ledger"):
        assert await ledger.add([different, row("fresh")]) == 1
    assert await ledger.get("same") == first
    assert ledger.clashes == 1
    assert len(caplog.records) == 1 and "'same'" in caplog.records[0].getMessage()


async def test_a_reused_id_is_caught_whatever_column_differs(ledger: Ledger) -> None:
    # the abuse case: the same prompt sent again under the same id differs only in its times
    base = {
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "tier": "deliberate",
        "depth": Depth(floor=5, floor_met=True),
    }
    variants: list[dict[str, Any]] = [
        {"started_at": JAN + timedelta(seconds=1)},
        {"ended_at": JAN + timedelta(seconds=3)},
        {"first_token_at": None},
        {"streamed": True},
        {"estimated": True},
        {"depth": Depth(floor=5, floor_met=False)},
        {"depth": Depth(floor=5, floor_met=True, agreement=0.5)},
        {"depth": Depth(floor=5, floor_met=True, shortfall=("cap_ignored",))},
        {"tenant": None},
        {"replica": "http://elsewhere:8000"},
    ]
    for i, change in enumerate(variants):
        original = row(f"v{i}", **base)
        assert await ledger.add([original]) == 1
        assert await ledger.add([original]) == 0 and ledger.clashes == i, change
        assert await ledger.add([row(f"v{i}", **(base | change))]) == 0
        assert ledger.clashes == i + 1, change


async def test_duplicates_within_one_batch_count_once_and_the_first_wins(ledger: Ledger) -> None:
    first, second = row("dup", prompt_tokens=7), row("dup", prompt_tokens=9)
    assert await ledger.add([first, row("other"), first, second]) == 2
    assert await ledger.get("dup") == first
    assert ledger.clashes == 1  # the identical copy is a replay, the different one a clash


def test_rows_no_database_could_store_are_refused_up_front() -> None:
    check_storable(row("fine"))
    with pytest.raises(ValueError, match="NUL"):
        check_storable(row("nul", tenant="ac\x00me"))
    with pytest.raises(ValueError, match="64 bits"):
        check_storable(row("huge", prompt_tokens=2**63, completion_tokens=1))


async def test_round_trip_keeps_every_field(ledger: Ledger) -> None:
    rich = row(
        "rich",
        tenant=None,
        key_id=None,
        tier="deliberate",
        model="qwen3-32b",
        prompt_tokens=1200,
        cached_tokens=1000,
        completion_tokens=900,
        reasoning_tokens=700,
        estimated=True,
        depth=Depth(
            samples=5,
            extensions=2,
            floor=512,
            floor_met=False,
            agreement=0.6,
            shortfall=("floor_missed", "cap_ignored", "effort_ignored", "samples_short"),
        ),
        outcome="client_disconnected",
        streamed=True,
        started_at=datetime(2026, 1, 15, 12, 0, 0, 1, tzinfo=UTC),
        first_token_at=None,
    )
    plain = row("plain")
    await ledger.add([rich, plain])
    assert await ledger.get("rich") == rich
    assert await ledger.get("plain") == plain
    assert await ledger.get("missing") is None
    assert rich.charge.total > 0 and len(rich.charge.lines) > 2


async def test_rows_from_before_the_depth_audit_read_back_without_a_shortfall(database: Database) -> None:
    # a ledger migrated before the audit's column, holding a row, then migrated on: the row has none
    older = [m for m in migrations() if m.version < 3]
    assert await database.migrate("ledger", older) == [m.version for m in older]
    before = row("before", tier="deliberate", depth=Depth(floor=5, floor_met=True))
    values = row_values(before)
    del values["depth_shortfall"], values["cascade"], values["priority_class"]
    columns = ", ".join(values)
    placeholders = ", ".join("?" * len(values))
    await database.execute(f"INSERT INTO ledger ({columns}) VALUES ({placeholders})", tuple(values.values()))
    assert await database.migrate("ledger", migrations()) == [3, 4, 5]
    assert await Ledger(database).get("before") == before


async def test_large_batches_span_statements_atomically(ledger: Ledger, database: Database) -> None:
    rows = [row(f"big{i:05d}") for i in range(ROWS_PER_STATEMENT * 2 + 17)]
    assert await ledger.add(rows) == len(rows)
    assert await ledger.add(rows[::-1]) == 0
    assert await count(database) == len(rows)


async def test_concurrent_overlapping_adds_store_each_row_once(ledger: Ledger, database_url: str) -> None:
    rows = [row(f"c{i:04d}") for i in range(300)]
    rng = random.Random(7)
    batches = [rng.sample(rows, 120) for _ in range(12)]
    # a second Database: on PostgreSQL, other connections, racing on the same keys (no deadlock: key order)
    other = await open_database(database_url)
    try:
        ledgers = [ledger, Ledger(other)]
        added = await asyncio.gather(*(ledgers[i % 2].add(batch) for i, batch in enumerate(batches)))
    finally:
        await other.aclose()
    stored = {r.record.request_id for batch in batches for r in batch}
    assert sum(added) == len(stored)
    assert [r.record.request_id async for r in ledger.rows(None, JAN, JAN + timedelta(days=1))] == sorted(
        stored
    )


async def test_money_is_stored_as_integers(ledger: Ledger, database: Database) -> None:
    await ledger.add([row("m", prompt_tokens=123_457, completion_tokens=9_999)])
    found = await database.fetch_one("SELECT total_micros, lines FROM ledger WHERE request_id = ?", ("m",))
    assert found is not None and type(found["total_micros"]) is int and found["total_micros"] > 0
    if database.dialect == "sqlite":
        typed = await database.fetch_one("SELECT typeof(total_micros) AS t FROM ledger")
        assert typed == {"t": "integer"}


async def test_a_float_total_is_refused(ledger: Ledger) -> None:
    good = row("f")
    lines = (dataclasses.replace(good.charge.lines[0], amount=1),)
    # 1.0 == 1, so Charge lets it through; the type checker would not, but data from outside is untyped
    floated = dataclasses.replace(good.charge, lines=lines, total=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not integer micros"):
        await ledger.add([LedgerRow(good.record, floated)])


def test_unknown_dialects_are_refused() -> None:
    class Other:
        dialect = "mysql"

    with pytest.raises(ValueError, match="mysql"):
        Ledger(Other())  # type: ignore[arg-type]


# -- periods and sums ----------------------------------------------------------------------------------
PERIOD_START = datetime(2026, 2, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 3, 1, tzinfo=UTC)


def period_rows() -> list[LedgerRow]:
    rows = []
    for i in range(40):
        rows.append(
            row(
                f"p{i:03d}",
                tenant=("acme", "globex")[i % 2],
                tier=("fast", "deliberate")[i % 3 == 0],
                model="qwen3-8b",
                prompt_tokens=1000 + i,
                cached_tokens=i,
                completion_tokens=200 + i,
                reasoning_tokens=(i if i % 3 == 0 else 0),
                depth=Depth(floor=10, floor_met=i % 2 == 0) if i % 3 == 0 else Depth(),
                started_at=PERIOD_START + timedelta(hours=17 * i),
            )
        )
    # the bounds: the start belongs to the period, the end to the next one
    rows.append(row("at-start", started_at=PERIOD_START, prompt_tokens=5))
    rows.append(row("at-end", started_at=PERIOD_END, prompt_tokens=5))
    rows.append(row("before", started_at=PERIOD_START - timedelta(microseconds=1), prompt_tokens=5))
    return rows


def expected_totals(rows: list[LedgerRow], tenant: str | None) -> list[LedgerTotal]:
    groups: dict[tuple[str, str, str, str], list[LedgerRow]] = {}
    for r in rows:
        record = r.record
        if not PERIOD_START <= record.started_at < PERIOD_END or tenant not in (None, record.tenant):
            continue
        key = (record.tier, r.charge.rated_tier, record.model, r.charge.currency)
        groups.setdefault(key, []).append(r)
    return [
        LedgerTotal(
            *key,
            requests=len(members),
            prompt_tokens=sum(m.record.prompt_tokens for m in members),
            cached_tokens=sum(m.record.cached_tokens for m in members),
            completion_tokens=sum(m.record.completion_tokens for m in members),
            reasoning_tokens=sum(m.record.reasoning_tokens for m in members),
            total=sum(m.charge.total for m in members),
        )
        for key, members in sorted(groups.items())
    ]


async def test_totals_per_tier_rated_tier_and_model(ledger: Ledger) -> None:
    rows = period_rows()
    await ledger.add(rows)
    for tenant in (None, "acme", "globex", "nobody"):
        totals = await ledger.totals(tenant, PERIOD_START, PERIOD_END)
        assert totals == expected_totals(rows, tenant)
        assert await ledger.total(tenant, PERIOD_START, PERIOD_END) == sum(t.total for t in totals)
    everyone = await ledger.totals(None, PERIOD_START, PERIOD_END)
    # a deliberate request that missed its floor is rated at fast prices: its own group
    assert {(t.tier, t.rated_tier) for t in everyone} == {
        ("fast", "fast"),
        ("deliberate", "deliberate"),
        ("deliberate", "fast"),
    }
    # "at-start" in, "at-end" and "before" out
    assert sum(t.requests for t in everyone) == 1 + sum(
        PERIOD_START + timedelta(hours=17 * i) < PERIOD_END for i in range(40)
    )
    next_hour = ledger.rows(None, PERIOD_END, PERIOD_END + timedelta(hours=1))
    assert [r.record.request_id async for r in next_hour] == ["at-end"]
    assert await ledger.total("nobody", PERIOD_START, PERIOD_END) == 0


async def test_total_refuses_to_add_currencies(ledger: Ledger) -> None:
    usd = row("usd", prompt_tokens=1000, started_at=PERIOD_START)
    eur = row("eur", prompt_tokens=1000, started_at=PERIOD_START)
    eur = LedgerRow(eur.record, dataclasses.replace(eur.charge, currency="EUR"))
    await ledger.add([usd, eur])
    with pytest.raises(ValueError, match="EUR"):
        await ledger.total(None, PERIOD_START, PERIOD_END)
    assert [t.currency for t in await ledger.totals(None, PERIOD_START, PERIOD_END)] == ["EUR", "USD"]


async def test_periods_need_aware_bounds(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="time zone"):
        await ledger.total(None, datetime(2026, 1, 1), PERIOD_END)


# -- exports: keyset pagination --------------------------------------------------------------------------
async def collect(rows: AsyncIterator[LedgerRow]) -> list[LedgerRow]:
    return [r async for r in rows]


async def test_rows_are_complete_and_ordered_across_pages(ledger: Ledger) -> None:
    rng = random.Random(3)
    moments = [PERIOD_START + timedelta(minutes=rng.randrange(20)) for _ in range(5)]  # many ties
    rows = [row(f"k{rng.randrange(10**6):06d}-{i}", started_at=rng.choice(moments)) for i in range(101)]
    rows += [row("outside", started_at=PERIOD_END)]
    await ledger.add(rows)
    inside = sorted((r for r in rows if r.record.started_at < PERIOD_END), key=_order)
    for batch in (1, 7, 100, 101, 1000):
        assert await collect(ledger.rows(None, PERIOD_START, PERIOD_END, batch=batch)) == inside
    acme = await collect(ledger.rows("acme", PERIOD_START, PERIOD_END, batch=3))
    assert acme == [r for r in inside if r.record.tenant == "acme"]
    assert await collect(ledger.rows("nobody", PERIOD_START, PERIOD_END)) == []
    with pytest.raises(ValueError, match="batch"):
        await collect(ledger.rows(None, PERIOD_START, PERIOD_END, batch=0))


async def test_rows_added_during_an_export_are_neither_repeated_nor_skipped_behind_it(ledger: Ledger) -> None:
    await ledger.add([row(f"a{i:03d}", started_at=PERIOD_START + timedelta(seconds=i)) for i in range(50)])
    seen = []
    async for r in ledger.rows(None, PERIOD_START, PERIOD_END, batch=10):
        seen.append(r.record.request_id)
        if len(seen) == 25:  # one row ahead of the cursor, one behind it
            await ledger.add(
                [
                    row("late-ahead", started_at=PERIOD_START + timedelta(seconds=40, milliseconds=1)),
                    row("late-behind", started_at=PERIOD_START + timedelta(seconds=3, milliseconds=1)),
                ]
            )
    assert len(seen) == len(set(seen)) == 51
    assert "late-ahead" in seen and "late-behind" not in seen


def _order(r: LedgerRow) -> tuple[datetime, str]:
    return (r.record.started_at, r.record.request_id)


def test_row_values_come_in_column_order() -> None:
    # SQLite inserts the values positionally: their order must be the columns'
    assert tuple(row_values(row("order"))) == _COLUMNS


async def test_spent_sums_a_tenant_or_a_key_by_start_and_end(ledger: Ledger) -> None:
    rows = [
        row("s1", tenant="acme", key_id="k1", prompt_tokens=1000, completion_tokens=100),
        row("s2", tenant="acme", key_id="k2", prompt_tokens=2000, completion_tokens=100),
        row("s3", tenant="acme", key_id="k1", prompt_tokens=500, started_at=JAN + timedelta(days=1)),
        row("s4", tenant="other", key_id="k9", prompt_tokens=4000),
    ]
    await ledger.add(rows)
    total = {r.record.request_id: r.charge.total for r in rows}
    assert all(total.values())
    day = (JAN, JAN + timedelta(days=1))
    assert await ledger.spent(*day, tenant="acme") == total["s1"] + total["s2"]
    assert await ledger.spent(*day, key_id="k1") == total["s1"]
    assert await ledger.spent(JAN, None, key_id="k1") == total["s1"] + total["s3"]
    assert await ledger.spent(JAN, None, tenant="nobody") == 0
    # only the requests that ended before a moment (each row here ends 2 s after it starts)
    assert await ledger.spent(JAN, None, tenant="acme", ended_before=JAN + timedelta(seconds=2)) == 0
    just_after = JAN + timedelta(seconds=2, microseconds=1)
    assert await ledger.spent(JAN, None, tenant="acme", ended_before=just_after) == total["s1"] + total["s2"]
    with pytest.raises(ValueError, match="exactly one"):
        await ledger.spent(JAN, None)
    with pytest.raises(ValueError, match="time zone"):
        await ledger.spent(datetime(2026, 1, 1), None, tenant="acme")
