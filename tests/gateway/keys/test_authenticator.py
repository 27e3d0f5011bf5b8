"""The authenticator over a real key store: reasons, the cache, shared lookups, last-used batches."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from engines.loop_lag import LoopLag
from gateway.database import Database, DatabaseUnavailable
from gateway.keys import ApiKey, Authenticator, AuthError, KeyStore

UNKNOWN_ID = "unknownid234"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingStore(KeyStore):
    """The real store, counting what reaches the database; `failing` makes it refuse, `hanging` makes its
    lookups wait until it is cleared."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.lookups: list[str] = []
        self.batches: list[dict[str, datetime]] = []
        self.failing = False
        self.hanging = asyncio.Event()
        self.hanging.set()  # set: not hanging

    async def lookup(self, key_id: str) -> tuple[ApiKey, bytes] | None:
        self.lookups.append(key_id)
        await self.hanging.wait()
        if self.failing:
            raise DatabaseUnavailable("the database is down")
        return await super().lookup(key_id)

    async def record_use(self, last_used: Mapping[str, datetime]) -> None:
        if self.failing:
            raise DatabaseUnavailable("the database is down")
        self.batches.append(dict(last_used))
        await super().record_use(last_used)


@pytest.fixture
async def store(database: Database) -> CountingStore:
    store = CountingStore(database)
    await store.migrate()
    await store.create_tenant("acme")
    return store


@pytest.fixture
def clock() -> Clock:
    return Clock(1000.0)


@pytest.fixture
def wall() -> Clock:
    return Clock(datetime(2030, 6, 1, tzinfo=UTC).timestamp())


@pytest.fixture
def auth(store: CountingStore, clock: Clock, wall: Clock) -> Authenticator:
    return Authenticator(store, cache_ttl_s=1.0, clock=clock, wall_clock=wall)


async def refused(auth: Authenticator, presented: str | None) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(presented)
    return caught.value


# -- reasons ----------------------------------------------------------------------------------------
async def test_a_valid_key_authenticates(store: CountingStore, auth: Authenticator) -> None:
    key, full = await store.create_key("acme", tiers=["fast"])
    assert await auth.authenticate(full) == key


@pytest.mark.parametrize(
    ("presented", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("   ", "missing"),
        ("sk-proj-abc", "malformed"),
        ("tg-abc-def", "malformed"),
        ("Bearer tg-" + "a" * 12 + "-" + "b" * 43, "malformed"),
        (f"tg-{UNKNOWN_ID}-" + "b" * 43, "unknown"),
    ],
)
async def test_bad_keys_say_why(auth: Authenticator, presented: str | None, reason: str) -> None:
    error = await refused(auth, presented)
    assert error.reason == reason
    assert error.key_id is None


async def test_a_wrong_secret_is_unknown_not_revealing_the_id(
    store: CountingStore, auth: Authenticator
) -> None:
    key, full = await store.create_key("acme", tiers=["fast"])
    secret = full.split("-", 2)[2]
    wrong = f"tg-{key.id}-{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"
    error = await refused(auth, wrong)
    assert (error.reason, error.key_id) == ("unknown", None)


async def test_revoked_and_expired_keys(store: CountingStore, auth: Authenticator, wall: Clock) -> None:
    revoked, revoked_full = await store.create_key("acme", tiers=["fast"])
    await store.revoke_key(revoked.id)
    past = datetime.fromtimestamp(wall.now, UTC) - timedelta(seconds=1)
    expired, expired_full = await store.create_key("acme", tiers=["fast"], expires_at=past)
    for full, key, reason in [(revoked_full, revoked, "revoked"), (expired_full, expired, "expired")]:
        error = await refused(auth, full)
        assert (error.reason, error.key_id) == (reason, key.id)
        secret = full.split("-", 2)[2]
        assert secret not in str(error)
        assert secret not in repr(error)


async def test_messages_never_hold_the_key(auth: Authenticator) -> None:
    presented = f"tg-{UNKNOWN_ID}-" + "s3cret" * 7 + "x"
    for attempt in (presented, presented[:-1], presented + "-"):
        error = await refused(auth, attempt)
        assert "s3cret" not in str(error)
        assert "s3cret" not in repr(error)


async def test_the_secret_is_compared_in_constant_time(
    store: CountingStore, auth: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, full = await store.create_key("acme", tiers=["fast"])
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # what `material` calls
    await auth.authenticate(full)
    await auth.authenticate(full)  # from the cache: still compared
    assert len(compared) == 2


# -- expiry, against the wall clock, on every call -----------------------------------------------------
async def test_expiry_is_checked_on_every_call(
    store: CountingStore, auth: Authenticator, wall: Clock
) -> None:
    soon = datetime.fromtimestamp(wall.now, UTC) + timedelta(seconds=30)
    key, full = await store.create_key("acme", tiers=["fast"], expires_at=soon)
    assert await auth.authenticate(full) == key
    wall.now += 30
    assert (await refused(auth, full)).reason == "expired"
    assert store.lookups == [key.id]  # the cached entry answered both


# -- the cache --------------------------------------------------------------------------------------
async def test_a_revocation_is_seen_after_the_ttl_not_before(
    store: CountingStore, auth: Authenticator, clock: Clock
) -> None:
    key, full = await store.create_key("acme", tiers=["fast"])
    await auth.authenticate(full)
    await store.revoke_key(key.id)
    clock.now += 0.999
    assert await auth.authenticate(full) == key  # still cached: the TTL is the promise, not sooner
    assert store.lookups == [key.id]
    clock.now += 0.001
    assert (await refused(auth, full)).reason == "revoked"
    assert store.lookups == [key.id, key.id]


async def test_unknown_keys_are_cached_too(store: CountingStore, auth: Authenticator, clock: Clock) -> None:
    presented = f"tg-{UNKNOWN_ID}-" + "b" * 43
    for _ in range(5):
        assert (await refused(auth, presented)).reason == "unknown"
    assert store.lookups == [UNKNOWN_ID]
    clock.now += 1.0
    await refused(auth, presented)
    assert store.lookups == [UNKNOWN_ID, UNKNOWN_ID]
    # malformed keys never reach the database at all
    await refused(auth, "tg-nope")
    assert len(store.lookups) == 2


async def test_invalidate_forgets_at_once(store: CountingStore, auth: Authenticator) -> None:
    key, full = await store.create_key("acme", tiers=["fast"])
    await auth.authenticate(full)
    await store.revoke_key(key.id)
    auth.invalidate(key.id)
    assert (await refused(auth, full)).reason == "revoked"


async def test_concurrent_misses_share_one_lookup(store: CountingStore, auth: Authenticator) -> None:
    key, full = await store.create_key("acme", tiers=["fast"])
    results = await asyncio.gather(*(auth.authenticate(full) for _ in range(20)))
    assert results == [key] * 20
    assert store.lookups == [key.id]


async def test_a_caller_giving_up_does_not_cancel_the_shared_lookup(
    store: CountingStore, auth: Authenticator
) -> None:
    key, full = await store.create_key("acme", tiers=["fast"])
    impatient = asyncio.create_task(auth.authenticate(full))
    patient = asyncio.create_task(auth.authenticate(full))
    await asyncio.sleep(0)  # both are waiting on the lookup now
    impatient.cancel()
    assert await patient == key
    assert impatient.cancelled()
    assert store.lookups == [key.id]


async def test_database_failures_are_not_auth_failures(store: CountingStore, auth: Authenticator) -> None:
    _, full = await store.create_key("acme", tiers=["fast"])
    store.failing = True
    with pytest.raises(DatabaseUnavailable):
        await auth.authenticate(full)
    store.failing = False  # and the failure was not cached
    await auth.authenticate(full)


async def test_the_cache_is_bounded(store: CountingStore) -> None:
    auth = Authenticator(store, max_cached=2, clock=Clock(0.0))
    ids = ["aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"]
    for key_id in ids:
        await refused(auth, f"tg-{key_id}-" + "b" * 43)
    await refused(auth, f"tg-{ids[2]}-" + "b" * 43)  # the newest is still cached
    await refused(auth, f"tg-{ids[0]}-" + "b" * 43)  # the oldest made room
    assert store.lookups == [*ids, ids[0]]


# -- the store down -------------------------------------------------------------------------------------
async def test_keys_read_before_are_served_from_the_cache_while_the_store_is_down(
    store: CountingStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    auth = Authenticator(store, cache_ttl_s=1.0, clock=clock, stale_while_unavailable_s=60)
    key, full = await store.create_key("acme", tiers=["fast"])
    never_seen = (await store.create_key("acme", tiers=["fast"]))[1]
    assert await auth.authenticate(full) == key
    store.failing = True
    clock.now += 30
    with caplog.at_level(logging.INFO, logger="tiergate.keys"):
        for _ in range(100):
            assert await auth.authenticate(full) == key
        for _ in range(3):
            with pytest.raises(DatabaseUnavailable):  # a 503, not a 401: it may well be a good key
                await auth.authenticate(never_seen)
        assert len(store.lookups) == 1 + 1 + 3  # the first read, one try, each never-seen key's try
        clock.now += 0.5
        assert await auth.authenticate(full) == key  # this one asked the store again, and was refused
        assert len(store.lookups) == 6
        clock.now += 31  # 61 s since the key was last read: past stale_while_unavailable_s
        with pytest.raises(DatabaseUnavailable):
            await auth.authenticate(full)
        store.failing = False
        assert await auth.authenticate(full) == key
        assert await auth.authenticate(never_seen) != key
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "cannot answer" in lines[0]
    assert "answers again" in lines[1]
    assert "101 requests served from the cache meanwhile, 4 refused" in lines[1]


async def test_a_revocation_is_honoured_as_soon_as_the_store_answers_again(
    store: CountingStore, clock: Clock
) -> None:
    auth = Authenticator(store, cache_ttl_s=1.0, clock=clock)
    key, full = await store.create_key("acme", tiers=["fast"])
    await auth.authenticate(full)
    store.failing = True
    clock.now += 2
    assert await auth.authenticate(full) == key
    await store.revoke_key(key.id)  # on another replica, the moment the database came back
    store.failing = False
    assert await auth.authenticate(full) == key  # served from the cache: nobody asked the store yet
    clock.now += 0.5
    assert (await refused(auth, full)).reason == "revoked"  # the first to ask hears the answer


async def test_a_hung_store_costs_a_request_lookup_timeout_s_at_most(
    store: CountingStore, clock: Clock
) -> None:
    auth = Authenticator(store, cache_ttl_s=1.0, clock=clock, lookup_timeout_s=0.05)
    key, full = await store.create_key("acme", tiers=["fast"])
    never_seen = (await store.create_key("acme", tiers=["fast"]))[1]
    await auth.authenticate(full)
    store.hanging.clear()
    clock.now += 2
    async with asyncio.timeout(10):  # for the test only: without the bound these would wait for ever
        assert await auth.authenticate(full) == key
        with pytest.raises(DatabaseUnavailable, match="did not answer"):
            await auth.authenticate(never_seen)
    store.hanging.set()  # the lookups left running in the background end, and fill the cache
    clock.now += 0.5
    assert await auth.authenticate(never_seen) != key


async def test_a_lookup_the_loop_itself_kept_waiting_is_no_outage(store: CountingStore, clock: Clock) -> None:
    lag = LoopLag(0.05)
    lag.start()
    await asyncio.sleep(0)  # its first tick is due
    try:
        auth = Authenticator(store, cache_ttl_s=1.0, clock=clock, lookup_timeout_s=0.3, lag=lag)
        key, full = await store.create_key("acme", tiers=["fast"])
        # the worker's own loop is stuck past the lookup's timeout (a saturated gateway) as the lookup starts:
        # the store is not to blame, and the key is served
        asyncio.get_running_loop().call_soon(time.sleep, 1.0)
        assert await auth.authenticate(full) == key
        assert store.lookups == [key.id]
    finally:
        await lag.aclose()


async def test_stale_keys_can_be_refused(store: CountingStore, clock: Clock) -> None:
    auth = Authenticator(store, cache_ttl_s=1.0, clock=clock, stale_while_unavailable_s=0)
    _, full = await store.create_key("acme", tiers=["fast"])
    await auth.authenticate(full)
    store.failing = True
    clock.now += 1
    with pytest.raises(DatabaseUnavailable):
        await auth.authenticate(full)


# -- last-used times --------------------------------------------------------------------------------
async def test_last_used_times_are_written_in_one_batch(
    store: CountingStore, auth: Authenticator, wall: Clock
) -> None:
    first, first_full = await store.create_key("acme", tiers=["fast"])
    second, second_full = await store.create_key("acme", tiers=["fast"])
    for _ in range(10):
        await auth.authenticate(first_full)
        await auth.authenticate(second_full)
        wall.now += 1
    assert store.batches == []  # no write on the request path
    assert (await store.get_key(first.id)) == first  # last_used_at still None
    await auth.flush()
    last = datetime.fromtimestamp(wall.now - 1, UTC)
    assert store.batches == [{first.id: last, second.id: last}]
    for key in await store.list_keys():
        assert key.last_used_at == last
    await auth.flush()  # nothing new: no write
    assert len(store.batches) == 1


async def test_a_failed_flush_keeps_the_times_for_the_next(
    store: CountingStore, auth: Authenticator, wall: Clock
) -> None:
    key, full = await store.create_key("acme", tiers=["fast"])
    await auth.authenticate(full)
    store.failing = True
    with pytest.raises(DatabaseUnavailable):
        await auth.flush()
    store.failing = False
    await auth.flush()
    assert store.batches == [{key.id: datetime.fromtimestamp(wall.now, UTC)}]


async def test_the_background_task_flushes_and_aclose_flushes_last(store: CountingStore) -> None:
    key, full = await store.create_key("acme", tiers=["fast"])
    auth = Authenticator(store, flush_interval_s=0.02)
    auth.start()
    try:
        await auth.authenticate(full)
        for _ in range(200):
            if store.batches:
                break
            await asyncio.sleep(0.01)
        assert [list(batch) for batch in store.batches] == [[key.id]]
        await auth.authenticate(full)
    finally:
        await auth.aclose()
    assert [list(batch) for batch in store.batches] == [[key.id], [key.id]]
