"""Budgets shared through a real Redis: atomic across budgets and replicas, seeded from the ledger once,
and harmless when Redis is not there."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio

from gateway.budgets import (
    Budget,
    BudgetHold,
    BudgetRefusal,
    BudgetStatus,
    BudgetUnavailable,
    RedisBudgets,
    Spend,
    Window,
    window_of,
)
from gateway.database.resp import RespClient
from tests.gateway.limits.redis_server import REDIS_SERVER, RedisServer, free_port

# Generous: these tests are about the arithmetic and its atomicity, not about timeouts.
PATIENT_S = 5.0
AT = datetime(2030, 11, 28, 12, 0, tzinfo=UTC).timestamp()  # windows that end in the future: keys live
DAY_MS = 86_400_000

Keeper = Callable[..., RedisBudgets]


class FakeLedger:
    """What the ledger holds per counter (Budget.counter), 0 for the rest; records every query."""

    def __init__(self, spent: dict[str, int] | None = None, *, delay_s: float = 0.0) -> None:
        self.spent = spent or {}
        self.delay_s = delay_s
        self.failure: Exception | None = None
        self.calls: list[tuple[Budget, Window, datetime | None]] = []

    async def __call__(self, budget: Budget, window: Window, ended_before: datetime | None) -> int:
        self.calls.append((budget, window, ended_before))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.failure is not None:
            raise self.failure
        return self.spent.get(budget.counter(window.start.timestamp()), 0)


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


@pytest.fixture
async def make(redis_url: str, redis_prefix: str, ledger: FakeLedger) -> AsyncIterator[Keeper]:
    """Keepers on the test's Redis and prefix (replicas of one gateway), closed afterwards."""
    keepers: list[RedisBudgets] = []

    def make(*, fail_open: bool = True, hold_ttl_s: float = 900.0, settle_delay_s: float = 0) -> RedisBudgets:
        keeper = RedisBudgets(
            redis_url,
            ledger,
            prefix=redis_prefix,
            fail_open=fail_open,
            timeout_s=PATIENT_S,
            hold_ttl_s=hold_ttl_s,
            settle_delay_s=settle_delay_s,
        )
        keepers.append(keeper)
        return keeper

    yield make
    for keeper in keepers:
        await keeper.aclose()


@pytest.fixture
async def keeper(make: Keeper) -> RedisBudgets:
    return make()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def tenant_daily(limit: int) -> Budget:
    return Budget("tenant", "acme", "daily", limit)


def key_daily(limit: int) -> Budget:
    return Budget("key", "k1", "daily", limit)


def hold_of(answer: BudgetHold | BudgetRefusal) -> BudgetHold:
    assert isinstance(answer, BudgetHold), answer
    return answer


def refusal_of(answer: BudgetHold | BudgetRefusal) -> BudgetRefusal:
    assert isinstance(answer, BudgetRefusal), answer
    return answer


def spend(amount: int, hold: BudgetHold | None, *, at: float = AT) -> Spend:
    return Spend("acme", "k1", at, amount, hold)


async def status_when(
    keeper: RedisBudgets, budget: Budget, done: Callable[[BudgetStatus], bool]
) -> BudgetStatus:
    """The budget's status, asked again until `done` holds."""
    async with asyncio.timeout(PATIENT_S):
        while True:
            [status] = await keeper.status("acme", [budget], AT)
            if done(status):
                return status
            await asyncio.sleep(0.02)


async def snapshot(raw: redis.asyncio.Redis, prefix: str) -> dict[str, object]:
    """Everything under the prefix: hashes and hold sets, with their expiries."""
    contents: dict[str, object] = {}
    for key in sorted([k async for k in raw.scan_iter(match=prefix + "*")]):
        value = await raw.hgetall(key) if await raw.type(key) == "hash" else await raw.zrange(key, 0, -1)
        contents[key] = (value, await raw.pexpiretime(key))
    return contents


async def test_a_full_budget_refuses_and_the_refusal_changes_nothing(
    make: Keeper, ledger: FakeLedger, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    budget = tenant_daily(1000)
    ledger.spent[budget.counter(AT)] = 300
    keeper = make()
    hold = hold_of(await keeper.reserve("acme", [budget], 500, AT))
    assert hold.counters == ("tenant:acme:daily:2030-11-28",)
    assert hold.tenant == "acme" and hold.amount == 500 and hold.id and ":" not in hold.id
    before = await snapshot(raw, redis_prefix)
    refusal = refusal_of(await keeper.reserve("acme", [budget], 201, AT))
    assert refusal == BudgetRefusal(budget, window_of("daily", AT), 200, 201)
    assert await snapshot(raw, redis_prefix) == before
    last = hold_of(await keeper.reserve("acme", [budget], 200, AT))  # exactly full is allowed
    assert last.id != hold.id
    [status] = await keeper.status("acme", [budget], AT)
    assert (status.spent, status.reserved, status.remaining) == (300, 700, 0)
    assert keeper.failures == 0


async def test_one_full_budget_refuses_in_all_of_them(
    keeper: RedisBudgets, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    roomy, full, also_full = key_daily(10_000), tenant_daily(100), Budget("tenant", "acme", "monthly", 50)
    hold_of(await keeper.reserve("acme", [roomy], 60, AT))
    before = await snapshot(raw, redis_prefix)
    refusal = refusal_of(await keeper.reserve("acme", [roomy, full, also_full], 120, AT))
    assert (refusal.budget, refusal.remaining) == (full, 100)  # the first without room, in order
    statuses = await keeper.status("acme", [roomy], AT)
    assert (statuses[0].spent, statuses[0].reserved) == (0, 60)
    # the other two were seeded by the refused call, and hold nothing
    after = await snapshot(raw, redis_prefix)
    assert {k: v for k, v in after.items() if k in before} == before
    assert [await raw.hget(key, "reserved") for key in after if key not in before] == ["0", "0"]


async def test_200_concurrent_reserves_get_exactly_the_room_there_is(
    make: Keeper, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    first, second = make(), make()  # two replicas on the same counters
    budget = tenant_daily(20 * 100)
    answers = await asyncio.gather(
        *((first if n % 2 else second).reserve("acme", [budget], 100, AT) for n in range(200))
    )
    holds = [a for a in answers if isinstance(a, BudgetHold)]
    assert len(holds) == 20
    assert all(isinstance(a, BudgetRefusal) and a.remaining == 0 for a in answers if a not in holds)
    key = f"{redis_prefix}budget:{{acme}}:tenant:acme:daily:2030-11-28"
    assert await raw.zcard(key + ":holds") == 20
    assert await raw.hget(key, "reserved") == "2000"
    assert first.failures == second.failures == 0


async def test_settling_releases_the_hold_and_charges_every_counter(
    make: Keeper, ledger: FakeLedger, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    first, second = make(), make()
    budgets = [key_daily(1000), tenant_daily(5000), Budget("tenant", "acme", "total", 10_000)]
    ledger.spent[budgets[1].counter(AT)] = 1000
    hold = hold_of(await first.reserve("acme", budgets, 800, AT))
    refusal_of(await second.reserve("acme", budgets, 300, AT))  # the key's budget: 200 left
    second.settle(spend(250, hold))  # on another replica than the reservation
    await second.flush()
    statuses = await first.status("acme", budgets, AT)
    assert [(s.spent, s.reserved) for s in statuses] == [(250, 0), (1250, 0), (250, 0)]
    assert await raw.zcard(f"{redis_prefix}budget:{{acme}}:key:k1:daily:2030-11-28:holds") == 0
    second.settle(spend(0, hold))  # settled twice: the hold is gone, nothing released again
    await second.flush()
    assert [s.reserved for s in await first.status("acme", budgets, AT)] == [0, 0, 0]
    hold_of(await second.reserve("acme", budgets, 750, AT))


async def test_settlements_are_batched_and_flushed_on_close(make: Keeper) -> None:
    batching, observer = make(settle_delay_s=0.05), make()
    budget = tenant_daily(1000)
    holds = [hold_of(await batching.reserve("acme", [budget], 300, AT)) for _ in range(3)]
    for hold in holds:
        batching.settle(spend(100, hold))
    [status] = await observer.status("acme", [budget], AT)
    assert (status.spent, status.reserved) == (0, 900)  # not sent yet
    await asyncio.sleep(0.15)
    [status] = await observer.status("acme", [budget], AT)
    assert (status.spent, status.reserved) == (300, 0)  # one batch, the charges summed
    late = hold_of(await batching.reserve("acme", [budget], 200, AT))
    batching.settle(spend(50, late))
    await batching.aclose()
    [status] = await observer.status("acme", [budget], AT)
    assert (status.spent, status.reserved) == (350, 0)


async def test_a_batch_settles_each_tenant_in_one_script_call(
    make: Keeper, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipelines: list[int] = []  # the script calls of each settlements' pipeline
    real = RespClient.evalsha_many

    async def counted(client: RespClient, script: Any, calls: Sequence[Any]) -> list[Any]:
        pipelines.append(len(calls))
        return await real(client, script, calls)

    monkeypatch.setattr(RespClient, "evalsha_many", counted)
    keeper, observer = make(settle_delay_s=60), make()
    budgets = {tenant: Budget("tenant", tenant, "daily", 1000) for tenant in ("acme", "zenith")}
    holds = [hold_of(await keeper.reserve(t, [b], 300, AT)) for t, b in budgets.items()]
    for hold in holds:  # each charges six counters (its key's and its tenant's, in every period)
        keeper.settle(Spend(hold.tenant, "k1", AT, 100, hold))
        keeper.settle(Spend(hold.tenant, "k2", AT, 10, None))
    await keeper.flush()
    assert pipelines == [2]
    for tenant, budget in budgets.items():
        [status] = await observer.status(tenant, [budget], AT)
        assert (status.spent, status.reserved) == (110, 0)


async def test_charges_to_counters_not_seeded_wait_for_the_ledger(
    make: Keeper, ledger: FakeLedger, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    ledger.delay_s = 0.05  # every request arrives while the first seed is under way
    keeper, observer = make(), make()
    budget = tenant_daily(1_000_000)
    keeper.settle(spend(700, None))  # nobody reserved in any counter: nothing to add to
    await keeper.flush()
    assert await raw.exists(f"{redis_prefix}budget:{{acme}}:tenant:acme:daily:2030-11-28") == 0
    ledger.spent[budget.counter(AT)] = 700  # the ledger has the row by the time a budget is read
    answers = await asyncio.gather(*(keeper.reserve("acme", [budget], 10, AT) for _ in range(50)))
    assert all(isinstance(a, BudgetHold) and a.counters for a in answers)
    assert len(ledger.calls) == 1  # one query for 50 requests
    called_budget, window, ended_before = ledger.calls[0]
    assert (called_budget, window, ended_before) == (budget, window_of("daily", AT), None)
    [status] = await observer.status("acme", [budget], AT)  # seeded already: no query from another replica
    assert (status.spent, status.reserved) == (700, 500)
    assert len(ledger.calls) == 1


async def test_a_reply_overtaken_by_the_seed_queries_the_ledger_no_more(
    keeper: RedisBudgets, ledger: FakeLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = tenant_daily(1000)
    script, replied, go_on = keeper._reserve, asyncio.Event(), asyncio.Event()

    async def first_reply_late(keys: list[str], args: list[int | str], client: object = None) -> object:
        reply = await script(keys=keys, args=args)
        if not replied.is_set():  # the first call's "no counter yet" is read after the seed landed
            replied.set()
            await go_on.wait()
        return reply

    monkeypatch.setattr(keeper, "_reserve", first_reply_late)
    late = asyncio.create_task(keeper.reserve("acme", [budget], 10, AT))
    await replied.wait()
    hold_of(await keeper.reserve("acme", [budget], 20, AT))  # seeds the counter
    go_on.set()
    hold_of(await late)
    assert len(ledger.calls) == 1
    [status] = await keeper.status("acme", [budget], AT)
    assert status.reserved == 30


async def test_expired_holds_are_reaped_and_never_released_twice(make: Keeper) -> None:
    keeper = make(hold_ttl_s=0.05)
    budget = tenant_daily(100)
    stale = hold_of(await keeper.reserve("acme", [budget], 100, AT))
    refusal_of(await keeper.reserve("acme", [budget], 1, AT))
    await asyncio.sleep(0.1)  # the stale hold's request died without settling
    fresh = hold_of(await keeper.reserve("acme", [budget], 60, AT))
    keeper.settle(spend(0, stale))  # too late: reaped already, releases nothing
    await keeper.flush()
    [status] = await keeper.status("acme", [budget], AT)
    assert (status.spent, status.reserved) == (0, 60)
    keeper.settle(spend(60, fresh))
    await keeper.flush()
    [status] = await keeper.status("acme", [budget], AT)
    assert (status.spent, status.reserved) == (60, 0)


async def test_counters_live_in_their_window_and_a_day_past_it(
    keeper: RedisBudgets, ledger: FakeLedger, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    monthly, total = Budget("tenant", "acme", "monthly", 1000), Budget("tenant", "acme", "total", 150)
    budgets = [tenant_daily(100), monthly, total]
    late_evening = datetime(2030, 11, 30, 23, 59, 59, tzinfo=UTC).timestamp()
    hold = hold_of(await keeper.reserve("acme", budgets, 100, late_evening))
    assert hold.counters == (
        "tenant:acme:daily:2030-11-30",
        "tenant:acme:monthly:2030-11",
        "tenant:acme:total:all",
    )
    base = f"{redis_prefix}budget:{{acme}}:tenant:acme:"
    december = datetime(2030, 12, 1, tzinfo=UTC).timestamp() * 1000
    for key in (base + "daily:2030-11-30", base + "monthly:2030-11"):
        assert await raw.pexpiretime(key) == await raw.pexpiretime(key + ":holds") == december + DAY_MS
    assert await raw.ttl(base + "total:all") == await raw.ttl(base + "total:all:holds") == -1
    # a second later is another day and another month: fresh counters, the total one shared
    answer = refusal_of(await keeper.reserve("acme", budgets, 100, late_evening + 1))
    assert (answer.budget, answer.remaining) == (total, 50)
    hold = hold_of(await keeper.reserve("acme", budgets[:2], 100, late_evening + 1))
    assert hold.counters == ("tenant:acme:daily:2030-12-01", "tenant:acme:monthly:2030-12")
    assert [call[1].label for call in ledger.calls] == [
        "2030-11-30",
        "2030-11",
        "all",
        "2030-12-01",
        "2030-12",
    ]


async def test_a_settlement_charges_the_windows_the_request_started_in(keeper: RedisBudgets) -> None:
    yesterday, today = tenant_daily(1000), tenant_daily(1000)
    hold = hold_of(await keeper.reserve("acme", [yesterday], 100, AT))
    hold_of(await keeper.reserve("acme", [today], 0, AT + 86_400))  # seeds the next day's counter
    keeper.settle(spend(40, hold, at=AT))  # ends the next day, started the day before
    await keeper.flush()
    [before] = await keeper.status("acme", [yesterday], AT)
    [after] = await keeper.status("acme", [today], AT + 86_400)
    assert (before.spent, before.reserved, after.spent, after.reserved) == (40, 0, 0, 0)


async def test_two_budgets_of_one_counter_hold_once(keeper: RedisBudgets) -> None:
    tight, loose = tenant_daily(100), tenant_daily(1000)
    hold = hold_of(await keeper.reserve("acme", [loose, tight], 80, AT))
    assert hold.counters == ("tenant:acme:daily:2030-11-28",)
    assert refusal_of(await keeper.reserve("acme", [loose, tight], 30, AT)).budget == tight
    keeper.settle(spend(0, hold))
    await keeper.flush()
    assert [s.reserved for s in await keeper.status("acme", [tight, loose], AT)] == [0, 0]


async def test_a_ledger_failure_propagates(make: Keeper, ledger: FakeLedger) -> None:
    keeper = make(fail_open=True)
    ledger.failure = RuntimeError("the database is down")
    with pytest.raises(RuntimeError, match="database is down"):
        await keeper.reserve("acme", [tenant_daily(100)], 10, AT)
    with pytest.raises(RuntimeError, match="database is down"):
        await keeper.status("acme", [tenant_daily(100)], AT)
    ledger.failure = None
    hold_of(await keeper.reserve("acme", [tenant_daily(100)], 10, AT))  # not a remembered failure
    assert keeper.failures == 0


async def test_bad_arguments_are_refused_before_redis(keeper: RedisBudgets) -> None:
    with pytest.raises(ValueError, match="micros"):
        await keeper.reserve("acme", [tenant_daily(100)], 2**53, AT)
    with pytest.raises(ValueError, match="micros"):
        await keeper.reserve("acme", [tenant_daily(100)], 1.5, AT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="another"):
        await keeper.reserve("other", [tenant_daily(100)], 1, AT)
    with pytest.raises(ValueError, match="another"):
        await keeper.status("other", [tenant_daily(100)], AT)
    keeper.settle(Spend("acme", "k1", AT, 1.5, None))  # type: ignore[arg-type]  # logged, dropped
    assert hold_of(await keeper.reserve("acme", [], 5, AT)).counters == ()
    assert await keeper.status("acme", [], AT) == []


async def test_failing_open_admits_holding_nothing_and_warns_once(
    ledger: FakeLedger, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = RedisBudgets(f"redis://127.0.0.1:{free_port()}/0", ledger, timeout_s=1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="tiergate.budgets"):
            holds = [hold_of(await keeper.reserve("acme", [tenant_daily(10)], 50, AT)) for _ in range(3)]
            with pytest.raises(BudgetUnavailable):
                await keeper.status("acme", [tenant_daily(10)], AT)
            keeper.settle(spend(5, holds[0]))  # never raises
            keeper.settle(spend(5, None))
            await keeper.flush()
    finally:
        await keeper.aclose()
    assert all(h.counters == () and h.amount == 50 for h in holds)
    # the settlements were sent as soon as the loop was free, again by flush(), once more at close
    assert keeper.failures == 7
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    assert ledger.calls == []


async def test_failing_closed_raises(ledger: FakeLedger) -> None:
    keeper = RedisBudgets(f"redis://127.0.0.1:{free_port()}/0", ledger, fail_open=False)
    try:
        with pytest.raises(BudgetUnavailable):
            await keeper.reserve("acme", [tenant_daily(10)], 5, AT)
    finally:
        await keeper.aclose()
    assert keeper.failures == 2  # and a PING at close, to release the hold it may have taken


@pytest.mark.skipif(REDIS_SERVER is None, reason="NO redis-server: cannot test a Redis restart")
async def test_a_restarted_empty_redis_is_seeded_again_from_the_ledger(ledger: FakeLedger) -> None:
    budget = tenant_daily(1000)
    with RedisServer() as server:
        keeper = RedisBudgets(server.url, ledger, timeout_s=2.0, settle_delay_s=0)
        try:
            hold_of(await keeper.reserve("acme", [budget], 400, AT))
            server.stop()
            assert hold_of(await keeper.reserve("acme", [budget], 5000, AT)).counters == ()  # open
            ledger.spent[budget.counter(AT)] = 300  # what the ledger got meanwhile
            server.start()  # same port, empty, without the scripts
            refusal = refusal_of(await keeper.reserve("acme", [budget], 800, AT))
            assert refusal.remaining == 700
            assert keeper.failures == 1
            assert len(ledger.calls) == 2
        finally:
            await keeper.aclose()


@pytest.mark.skipif(REDIS_SERVER is None, reason="NO redis-server: cannot hang a Redis")
async def test_settlements_failed_in_a_redis_hang_reach_the_counter_once_it_answers(
    ledger: FakeLedger,
) -> None:
    """A hung Redis times settlements out. Those sent on an open connection wait in its socket and run when
    it wakes up (sent again, they must not count twice); those that needed a new connection never reached
    it (they must not be lost)."""
    budget = tenant_daily(10**12)
    with RedisServer() as server:
        keeper = RedisBudgets(server.url, ledger, timeout_s=0.1, settle_delay_s=0)
        observer = RedisBudgets(server.url, ledger, timeout_s=PATIENT_S)
        try:
            await observer.reserve("acme", [budget], 0, AT)  # seeds the counter, however busy the machine
            keeper.settle(spend(100, None))
            await keeper.flush()  # opens the keeper's connection
            server.pause()
            try:
                keeper.settle(spend(1000, None))
                await keeper.flush()  # on the connection open before the hang: it runs when Redis wakes
                for amount in range(1, 21):  # fail open: admitted, holding nothing
                    hold = hold_of(await keeper.reserve("acme", [budget], 500, AT))
                    keeper.settle(spend(amount, hold))
                    await keeper.flush()
            finally:
                server.resume()
            expected = 100 + 1000 + sum(range(1, 21))
            await status_when(observer, budget, lambda status: status.spent >= expected)
            await asyncio.sleep(0.5)  # every copy sent during the hang has run by now
            await keeper.flush()
            [status] = await observer.status("acme", [budget], AT)
            assert status.spent == expected
        finally:
            await keeper.aclose()
            await observer.aclose()


@pytest.mark.skipif(REDIS_SERVER is None, reason="NO redis-server: cannot hang a Redis")
async def test_a_reservation_lost_in_a_redis_hang_does_not_hold_its_amount(ledger: FakeLedger) -> None:
    """Its caller gave up on it, so nobody releases its hold; yet the hung Redis runs it when it wakes."""
    budget = tenant_daily(10**12)
    with RedisServer() as server:
        keeper = RedisBudgets(server.url, ledger, timeout_s=0.1, settle_delay_s=0)
        observer = RedisBudgets(server.url, ledger, timeout_s=PATIENT_S)
        try:
            await observer.reserve("acme", [budget], 0, AT)  # seeds the counter, however busy the machine
            keeper.settle(spend(1, None))
            await keeper.flush()  # opens the keeper's connection
            server.pause()
            try:
                lost = hold_of(await keeper.reserve("acme", [budget], 500, AT))  # on the open connection
            finally:
                server.resume()
            assert lost.counters == ()  # admitted unbudgeted
            # Redis runs what was in its sockets as it wakes, before it answers any call sent after: from
            # the first status on, the lost reservation is held, until the keeper releases it
            await status_when(observer, budget, lambda status: status.reserved == 0)
            keeper.settle(spend(7, lost))
            await keeper.flush()
            [status] = await observer.status("acme", [budget], AT)
            assert (status.spent, status.reserved) == (8, 0)
        finally:
            await keeper.aclose()
            await observer.aclose()
