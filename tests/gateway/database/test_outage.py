"""PostgreSQL going away and coming back, on a server of the test's own: callers fail at once while it is
down, no caller waits past its bounds when it hangs, the outage is logged once, and the first connect
after its return ends it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from engines.loop_lag import LoopLag
from gateway.database import DatabaseUnavailable, open_database
from gateway.database.pool import ConnectionPool
from tests.gateway.database.postgres_server import PostgresServer

PATIENT_S = 20.0  # a deadline for the test itself, far past every bound under test


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def pool(throwaway_postgres: PostgresServer) -> AsyncIterator[tuple[ConnectionPool, Clock]]:
    clock = Clock()
    # one connection: callers take turns, so which of them tries to connect is not left to chance
    pool = ConnectionPool(throwaway_postgres.url, display="test", max_size=1, retry_s=0.5, clock=clock)
    await pool.open(PATIENT_S)
    yield pool, clock
    await pool.aclose()


async def select_one(pool: ConnectionPool) -> int:
    async with pool.connection() as connection:
        cursor = await connection.execute("SELECT 1 AS one")
        row = await cursor.fetchone()
    assert row is not None
    return int(row["one"])


def stall_the_loop(seconds: float) -> None:
    """The worker's own loop stuck (a saturated gateway) from its next turn: whatever it awaits waits."""
    asyncio.get_running_loop().call_soon(time.sleep, seconds)


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(("tiergate.database", "psycopg"))]


async def test_while_down_one_caller_tries_the_rest_fail_at_once_and_the_first_connect_back_ends_it(
    pool: tuple[ConnectionPool, Clock], throwaway_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    connections, clock = pool
    assert await select_one(connections) == 1
    throwaway_postgres.stop()
    clock.now += 2  # the idle connection is checked before use, and found broken
    with caplog.at_level(logging.INFO):
        outcomes = await asyncio.gather(*(select_one(connections) for _ in range(50)), return_exceptions=True)
        assert all(isinstance(outcome, DatabaseUnavailable) for outcome in outcomes), outcomes
        assert connections.down
        throwaway_postgres.start()
        with pytest.raises(DatabaseUnavailable, match="unreachable for"):  # not before retry_s is over
            await select_one(connections)
        clock.now += 0.5
        assert await select_one(connections) == 1  # the first caller after retry_s connects
        assert not connections.down
    lines = outage_lines(caplog)
    assert len(lines) == 2, lines
    assert "is unreachable" in lines[0]
    assert "reachable again" in lines[1]
    assert "50 uses refused" in lines[1]  # 49 of the 50 and the one too early: none of them connected


@pytest.mark.parametrize("lag_aware", [False, True], ids=["wall-clock", "lag-aware"])
async def test_a_hung_server_fails_statements_within_their_bounds_and_is_survived(
    throwaway_postgres: PostgresServer, lag: LoopLag, lag_aware: bool
) -> None:
    """A hung server fails its callers whether or not the bounds allow for the loop's lag: the loop keeps up
    here, so its free time is the wall clock's."""
    db = await open_database(
        throwaway_postgres.url,
        connect_timeout_s=0.3,
        statement_timeout_s=0.5,
        lag=lag if lag_aware else None,
    )
    try:
        await db.execute("CREATE TABLE things (n INTEGER)")
        throwaway_postgres.pause()
        try:
            async with asyncio.timeout(PATIENT_S):  # psycopg alone: 10 s per statement, each cancel awaited
                for _ in range(3):
                    with pytest.raises(DatabaseUnavailable):
                        await db.execute("INSERT INTO things VALUES (1)")
                with pytest.raises(DatabaseUnavailable):
                    async with db.transaction() as tx:
                        await tx.execute("INSERT INTO things VALUES (2)")
        finally:
            throwaway_postgres.resume()
        async with asyncio.timeout(PATIENT_S):
            while True:
                try:
                    await db.execute("INSERT INTO things VALUES (3)")
                    break
                except DatabaseUnavailable:
                    await asyncio.sleep(0.1)
        # statements cut by their deadline may or may not have run; the one after the outage ran once
        rows = await db.fetch_all("SELECT n FROM things WHERE n = 3")
        assert len(rows) == 1
    finally:
        await db.aclose()


async def test_a_statement_overrunning_its_bound_closes_its_connection_not_the_pool(
    throwaway_postgres: PostgresServer,
) -> None:
    db = await open_database(throwaway_postgres.url, statement_timeout_s=0.3)
    try:
        with pytest.raises(DatabaseUnavailable, match=r"did not answer within 0\.3s"):
            await db.execute("SELECT pg_sleep(5)")
        assert await db.fetch_all("SELECT 1 AS one") == [{"one": 1}]
    finally:
        await db.aclose()


async def test_a_statement_the_loop_itself_kept_waiting_is_answered(
    throwaway_postgres: PostgresServer, lag: LoopLag
) -> None:
    """The gateway's own loop stuck past the statement's bound as the statement runs: the server answered in
    time, the loop could not read it; with the lag the bound counts the loop's free time, and it is served
    (without it, the statement fails: `lag=None` here raises DatabaseUnavailable)."""
    db = await open_database(throwaway_postgres.url, statement_timeout_s=0.3, lag=lag)
    try:
        stall_the_loop(1.0)
        assert await db.fetch_all("SELECT 1 AS one") == [{"one": 1}]
        with pytest.raises(
            DatabaseUnavailable, match=r"did not answer within 0\.3s"
        ):  # a slow server still fails
            await db.execute("SELECT pg_sleep(5)")
    finally:
        await db.aclose()


async def test_a_connect_the_loop_itself_kept_waiting_is_no_outage(
    throwaway_postgres: PostgresServer, lag: LoopLag
) -> None:
    """A new connection made while the loop is stuck past `connect_timeout_s`: it is made, and the pool was
    never down (without the lag the connect fails and the pool declares an outage)."""
    connections = ConnectionPool(
        throwaway_postgres.url, display="test", max_size=1, connect_timeout_s=0.3, lag=lag
    )
    try:
        stall_the_loop(1.0)
        assert await select_one(connections) == 1
        assert not connections.down
    finally:
        await connections.aclose()
