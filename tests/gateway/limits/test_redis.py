"""The shared limiter against a real Redis: atomic across replicas, and harmless when Redis is not there."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio

from gateway.limits import Admission, LimiterUnavailable, Quota, RateLimiter, RedisLimiter, Reservation
from tests.gateway.limits.redis_server import REDIS_SERVER, RedisServer, free_port

# Generous: these tests are about the arithmetic and its atomicity, and a loaded CI machine must not turn
# them into tests of failing open (which would admit everything). Timeouts have tests of their own.
PATIENT_S = 5.0


@pytest.fixture
async def limiter(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisLimiter]:
    limiter = RedisLimiter(redis_url, prefix=redis_prefix, timeout_s=PATIENT_S, settle_delay_s=0)
    yield limiter
    await limiter.aclose()


@pytest.fixture
async def replica(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisLimiter]:
    """A second gateway replica: its own limiter, sharing the first one's Redis and prefix."""
    limiter = RedisLimiter(redis_url, prefix=redis_prefix, timeout_s=PATIENT_S, settle_delay_s=0)
    yield limiter
    await limiter.aclose()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A server that accepts connections and never answers, like a Redis that hangs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # the kernel completes handshakes; nobody ever reads
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"


def refused_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def reservation_of(admission: Admission) -> Reservation:
    assert admission.reservation is not None
    return admission.reservation


EVENT_DEADLINE_S = 60.0  # how long a test waits for an event that takes milliseconds


async def test_a_burst_of_rpm_then_a_refusal_saying_when(limiter: RedisLimiter) -> None:
    quota = Quota(rpm=3)
    admissions = [await limiter.admit("key-1", "fast", quota, 0) for _ in range(4)]
    assert [a.allowed for a in admissions] == [True, True, True, False]
    assert [a.requests.remaining for a in admissions if a.requests] == [2, 1, 0, 0]
    assert admissions[0].requests is not None
    # one emission interval (60 s / 3), less whatever passed since the first (a stalled machine's seconds too)
    assert 10.0 < admissions[0].requests.reset_s <= 20.0
    assert admissions[3].retry_after_s is not None
    assert 10.0 < admissions[3].retry_after_s <= 20.0
    assert admissions[3].reservation is None


async def test_two_replicas_admit_exactly_rpm_of_200_concurrent_requests(
    limiter: RedisLimiter, replica: RedisLimiter
) -> None:
    quota = Quota(rpm=50)
    calls = [(limiter if n % 2 else replica).admit("key-1", "fast", quota, 0) for n in range(200)]
    admissions = await asyncio.gather(*calls)
    assert limiter.failures == replica.failures == 0  # nothing failed open
    assert sum(a.allowed for a in admissions) == 50
    refused = [a for a in admissions if not a.allowed]
    assert all(a.retry_after_s is not None and 0 < a.retry_after_s <= 1.2 for a in refused)


async def test_a_reservation_settles_on_another_replica(limiter: RedisLimiter, replica: RedisLimiter) -> None:
    quota = Quota(tpm=1000)
    first = await limiter.admit("key-1", "fast", quota, 900)
    assert first.allowed
    assert not (await replica.admit("key-1", "fast", quota, 500)).allowed
    replica.settle(reservation_of(first), 200)  # refunds 700
    await replica.flush()
    second = await limiter.admit("key-1", "fast", quota, 500)
    assert second.allowed
    assert second.tokens is not None
    assert second.tokens.remaining in (299, 300)  # a millisecond may have drained a token
    limiter.settle(reservation_of(second), 900)  # charges 400: the bucket is full
    await limiter.flush()
    assert not (await replica.admit("key-1", "fast", quota, 1)).allowed


async def test_both_dimensions_or_neither(limiter: RedisLimiter) -> None:
    quota = Quota(rpm=2, tpm=1000)
    assert (await limiter.admit("key-1", "fast", quota, 900)).allowed
    refused = await limiter.admit("key-1", "fast", quota, 500)
    assert not refused.allowed
    assert refused.requests is not None
    assert refused.requests.remaining == 1  # the token refusal took no request
    assert (await limiter.admit("key-1", "fast", quota, 100)).allowed
    refused = await limiter.admit("key-1", "fast", quota, 0)
    assert not refused.allowed
    assert refused.tokens is not None
    assert refused.tokens.remaining <= 1  # the request refusal took no tokens, only time returned some


async def test_buckets_expire_when_they_would_have_drained(
    limiter: RedisLimiter, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    admission = await limiter.admit("key-1", "fast", Quota(rpm=50, tpm=1000), 100)
    requests_key, tokens_key = f"{redis_prefix}rl:{{key-1:fast}}:r", f"{redis_prefix}rl:{{key-1:fast}}:t"
    assert 0 < await raw.pttl(requests_key) <= 1200  # one request of 50 a minute drains in 1.2 s
    assert 0 < await raw.pttl(tokens_key) <= 6000
    limiter.settle(reservation_of(admission), 0)
    await limiter.flush()
    assert await raw.exists(tokens_key) == 0  # full again: deleted rather than kept


async def test_no_limits_never_calls_redis() -> None:
    limiter = RedisLimiter(refused_url(), fail_open=False)
    try:
        admission = await limiter.admit("key-1", "fast", Quota(), 1000)
    finally:
        await limiter.aclose()
    assert admission == Admission(True, None, None, None, None)
    assert limiter.failures == 0


async def test_failing_open_lets_requests_through_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    # a timeout of an hour: were a refused connection to wait for it, the five calls would never end
    limiter = RedisLimiter(refused_url(), timeout_s=3600.0)
    try:
        with caplog.at_level(logging.WARNING, logger="tiergate.limits"):
            async with asyncio.timeout(EVENT_DEADLINE_S):  # a refused connection fails at once
                admissions = [await limiter.admit("key-1", "fast", Quota(rpm=1, tpm=10), 5) for _ in range(5)]
            limiter.settle(Reservation("key-1", "fast", 5, 10), 7)  # never raises
    finally:
        await limiter.aclose()
    assert all(a == Admission(True, None, None, None, None) for a in admissions)
    assert limiter.failures == 6
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


async def test_failing_closed_raises() -> None:
    limiter = RedisLimiter(refused_url(), fail_open=False)
    try:
        with pytest.raises(LimiterUnavailable):
            await limiter.admit("key-1", "fast", Quota(rpm=1), 0)
    finally:
        await limiter.aclose()
    assert limiter.failures == 1


@pytest.mark.parametrize("fail_open", [True, False])
async def test_a_hung_redis_costs_at_most_timeout_s(silent_url: str, fail_open: bool) -> None:
    limiter = RedisLimiter(silent_url, fail_open=fail_open, timeout_s=0.2)
    try:
        started = time.monotonic()
        try:
            # it ends (at timeout_s), where the hang itself never would
            async with asyncio.timeout(EVENT_DEADLINE_S):
                admission = await limiter.admit("key-1", "fast", Quota(rpm=1), 0)
            assert admission.allowed and admission.requests is None
        except LimiterUnavailable:
            assert not fail_open
        elapsed = time.monotonic() - started
        limiter.settle(Reservation("key-1", "fast", 5, 10), 0)
    finally:
        await limiter.aclose()
    assert elapsed > 0.15  # it did wait for the answer, timeout_s (a lower bound: slowness cannot break it)
    assert limiter.failures == 2


@pytest.mark.skipif(REDIS_SERVER is None, reason="NO redis-server: cannot test a Redis restart")
async def test_a_redis_restart_is_survived_without_recreating_the_limiter() -> None:
    quota = Quota(rpm=2, tpm=1000)
    server = RedisServer()
    server.start()
    limiter: RateLimiter
    limiter = shared = RedisLimiter(server.url, timeout_s=2.0)
    try:
        before = await limiter.admit("key-1", "fast", quota, 10)
        assert before.requests is not None
        assert before.requests.remaining == 1
        server.stop()
        during = [await limiter.admit("key-1", "fast", quota, 10) for _ in range(3)]
        assert all(a.allowed and a.requests is None for a in during)
        assert shared.failures == 3
        server.start()  # same port, empty, and without the scripts loaded
        after = await limiter.admit("key-1", "fast", quota, 10)
        assert after.requests is not None
        assert after.requests.remaining == 1
        assert shared.failures == 3
    finally:
        await limiter.aclose()
        server.stop()


async def test_settlements_are_batched_and_flushed_on_close(redis_url: str, redis_prefix: str) -> None:
    batching = RedisLimiter(redis_url, prefix=redis_prefix, timeout_s=PATIENT_S, settle_delay_s=0.05)
    observer = RedisLimiter(redis_url, prefix=redis_prefix, timeout_s=PATIENT_S, settle_delay_s=0)
    quota = Quota(tpm=1000)
    try:
        admissions = [await batching.admit("key-b", "fast", quota, 300) for _ in range(3)]
        assert all(a.allowed for a in admissions)
        for admission in admissions:
            batching.settle(reservation_of(admission), 100)  # refunds 200 each, queued
        assert not (await observer.admit("key-b", "fast", quota, 500)).allowed  # not sent yet
        await asyncio.sleep(0.15)  # one batch went out
        assert (await observer.admit("key-b", "fast", quota, 500)).allowed
        late = await batching.admit("key-b", "fast", quota, 200)
        batching.settle(reservation_of(late), 0)  # releases 200, still pending at close
    finally:
        await batching.aclose()
    assert (await observer.admit("key-b", "fast", quota, 190)).allowed  # the close flushed the release
    await observer.aclose()
