"""GCRA as the client sees it, on the in-process limiter with a clock the test moves by hand."""

from __future__ import annotations

import pytest

from gateway.limits import Admission, LocalLimiter, Quota, RateLimiter, Reservation, Window


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0  # any origin: like time.monotonic, only differences matter

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(clock: Clock) -> LocalLimiter:
    return LocalLimiter(clock=clock)


async def admit_many(limiter: RateLimiter, quota: Quota, count: int, tokens: int = 0) -> list[Admission]:
    return [await limiter.admit("key-1", "fast", quota, tokens) for _ in range(count)]


def reservation_of(admission: Admission) -> Reservation:
    assert admission.reservation is not None
    return admission.reservation


async def test_a_fresh_bucket_admits_exactly_rpm_at_once(limiter: LocalLimiter) -> None:
    admissions = await admit_many(limiter, Quota(rpm=5), 6)
    assert [a.allowed for a in admissions] == [True] * 5 + [False]
    assert [a.requests for a in admissions[:5]] == [
        Window(limit=5, remaining=4, reset_s=12.0),
        Window(limit=5, remaining=3, reset_s=24.0),
        Window(limit=5, remaining=2, reset_s=36.0),
        Window(limit=5, remaining=1, reset_s=48.0),
        Window(limit=5, remaining=0, reset_s=60.0),
    ]
    refused = admissions[5]
    assert refused.requests == Window(limit=5, remaining=0, reset_s=60.0)
    assert refused.retry_after_s == 12.0
    assert refused.tokens is None
    assert refused.reservation is None


async def test_then_one_request_every_60_over_rpm_seconds(limiter: LocalLimiter, clock: Clock) -> None:
    quota = Quota(rpm=5)
    await admit_many(limiter, quota, 5)
    clock.advance(11.999)
    refused = await limiter.admit("key-1", "fast", quota, 0)
    assert not refused.allowed
    assert refused.retry_after_s == 0.001
    clock.advance(0.001)
    assert [a.allowed for a in await admit_many(limiter, quota, 2)] == [True, False]
    clock.advance(12.0)
    assert [a.allowed for a in await admit_many(limiter, quota, 2)] == [True, False]


async def test_not_a_fixed_window_half_a_minute_frees_half_the_limit(
    limiter: LocalLimiter, clock: Clock
) -> None:
    quota = Quota(rpm=10)
    await admit_many(limiter, quota, 10)
    clock.advance(30.0)
    probe = await limiter.admit("key-1", "fast", quota, 0)
    assert probe.requests == Window(limit=10, remaining=4, reset_s=36.0)  # 5 free, one just taken
    assert sum(a.allowed for a in await admit_many(limiter, quota, 10)) == 4


async def test_an_interval_of_fractional_milliseconds_keeps_the_burst_exact(
    limiter: LocalLimiter, clock: Clock
) -> None:
    quota = Quota(rpm=7)  # one every 8571.43 ms
    admissions = await admit_many(limiter, quota, 8)
    assert sum(a.allowed for a in admissions) == 7
    assert admissions[-1].retry_after_s == 8.572  # rounded up: a retry then passes, one earlier would not
    clock.advance(8.571)
    assert not (await limiter.admit("key-1", "fast", quota, 0)).allowed
    clock.advance(0.001)
    assert (await limiter.admit("key-1", "fast", quota, 0)).allowed


async def test_a_token_reservation_consumes_its_estimate(limiter: LocalLimiter, clock: Clock) -> None:
    quota = Quota(tpm=1000)
    first = await limiter.admit("key-1", "fast", quota, 600)
    assert first.allowed
    assert first.tokens == Window(limit=1000, remaining=400, reset_s=36.0)
    assert first.requests is None
    assert first.reservation == Reservation("key-1", "fast", 600, 1000)
    second = await limiter.admit("key-1", "fast", quota, 600)
    assert not second.allowed
    assert second.retry_after_s == 12.0  # 200 tokens short at 1000 a minute


async def test_settling_below_the_estimate_refunds_the_difference(limiter: LocalLimiter) -> None:
    quota = Quota(tpm=1000)
    first = await limiter.admit("key-1", "fast", quota, 600)
    assert not (await limiter.admit("key-1", "fast", quota, 600)).allowed
    limiter.settle(reservation_of(first), 100)
    second = await limiter.admit("key-1", "fast", quota, 600)
    assert second.allowed
    assert second.tokens == Window(limit=1000, remaining=300, reset_s=42.0)


async def test_settling_above_the_estimate_charges_the_difference(limiter: LocalLimiter) -> None:
    quota = Quota(tpm=1000)
    first = await limiter.admit("key-1", "fast", quota, 100)
    limiter.settle(reservation_of(first), 700)
    probe = await limiter.admit("key-1", "fast", quota, 0)
    assert probe.tokens == Window(limit=1000, remaining=300, reset_s=42.0)
    assert not (await limiter.admit("key-1", "fast", quota, 301)).allowed


async def test_releasing_a_failed_request_refunds_it_all(limiter: LocalLimiter) -> None:
    quota = Quota(tpm=1000)
    first = await limiter.admit("key-1", "fast", quota, 800)
    limiter.settle(reservation_of(first), 0)
    probe = await limiter.admit("key-1", "fast", quota, 1000)
    assert probe.allowed
    assert probe.tokens == Window(limit=1000, remaining=0, reset_s=60.0)


async def test_a_refund_never_frees_more_than_the_whole_limit(limiter: LocalLimiter, clock: Clock) -> None:
    quota = Quota(tpm=1000)
    first = await limiter.admit("key-1", "fast", quota, 500)
    clock.advance(30.0)  # the 500 have drained away meanwhile
    limiter.settle(reservation_of(first), 0)
    admissions = await admit_many(limiter, quota, 2, tokens=1000)
    assert [a.allowed for a in admissions] == [True, False]


async def test_a_charge_never_costs_more_than_a_minute_of_waiting(
    limiter: LocalLimiter, clock: Clock
) -> None:
    quota = Quota(tpm=1000)
    first = await limiter.admit("key-1", "fast", quota, 10)
    limiter.settle(reservation_of(first), 50_000)
    probe = await limiter.admit("key-1", "fast", quota, 1)
    assert probe.tokens == Window(limit=1000, remaining=0, reset_s=60.0)
    assert probe.retry_after_s == 0.06
    clock.advance(60.0)
    assert (await limiter.admit("key-1", "fast", quota, 1000)).allowed


async def test_an_estimate_above_the_whole_limit_is_clamped_to_it(
    limiter: LocalLimiter, clock: Clock
) -> None:
    quota = Quota(tpm=1000)
    huge = await limiter.admit("key-1", "fast", quota, 5000)
    assert huge.allowed
    assert reservation_of(huge).tokens == 1000
    assert huge.tokens == Window(limit=1000, remaining=0, reset_s=60.0)
    again = await limiter.admit("key-1", "fast", quota, 5000)
    assert not again.allowed
    assert again.retry_after_s == 60.0  # not never: it fits once the bucket is empty


async def test_a_tpm_refusal_consumes_no_request(limiter: LocalLimiter) -> None:
    quota = Quota(rpm=2, tpm=1000)
    first = await limiter.admit("key-1", "fast", quota, 900)
    assert first.requests == Window(limit=2, remaining=1, reset_s=30.0)
    refused = await limiter.admit("key-1", "fast", quota, 500)
    assert not refused.allowed
    assert refused.requests == Window(limit=2, remaining=1, reset_s=30.0)
    assert refused.tokens == Window(limit=1000, remaining=100, reset_s=54.0)
    assert refused.retry_after_s == 24.0  # tokens decide: 400 short at 1000 a minute
    assert (await limiter.admit("key-1", "fast", quota, 100)).allowed


async def test_an_rpm_refusal_consumes_no_tokens(limiter: LocalLimiter) -> None:
    quota = Quota(rpm=1, tpm=1000)
    await limiter.admit("key-1", "fast", quota, 100)
    refused = await limiter.admit("key-1", "fast", quota, 100)
    assert not refused.allowed
    assert refused.retry_after_s == 60.0  # the request dimension decides
    assert refused.tokens == Window(limit=1000, remaining=900, reset_s=6.0)
    assert refused.reservation is None


async def test_keys_and_tiers_have_buckets_of_their_own(limiter: LocalLimiter) -> None:
    quota = Quota(rpm=1)
    results = [
        await limiter.admit(subject, tier, quota, 0)
        for subject, tier in [("a", "fast"), ("a", "deliberate"), ("b", "fast"), ("a", "fast")]
    ]
    assert [a.allowed for a in results] == [True, True, True, False]


async def test_no_limits_is_a_fast_path_that_keeps_nothing(limiter: LocalLimiter) -> None:
    admission = await limiter.admit("key-1", "fast", Quota(), 10_000_000)
    assert admission == Admission(True, None, None, None, None)
    assert len(limiter) == 0


async def test_drained_buckets_are_dropped(limiter: LocalLimiter, clock: Clock) -> None:
    quota = Quota(rpm=60, tpm=6000)
    for index in range(100):
        await limiter.admit(f"key-{index}", "fast", quota, 100)
    assert len(limiter) == 200
    clock.advance(0.5)
    await limiter.admit("key-0", "fast", quota, 100)
    assert len(limiter) == 200  # nothing has drained yet
    clock.advance(60.0)
    await limiter.admit("key-new", "fast", quota, 100)
    assert len(limiter) == 2  # the sweep dropped every drained bucket, the new one stays


async def test_a_settled_bucket_that_is_full_again_is_dropped(limiter: LocalLimiter) -> None:
    first = await limiter.admit("key-1", "fast", Quota(tpm=1000), 100)
    assert len(limiter) == 1
    limiter.settle(reservation_of(first), 0)
    assert len(limiter) == 0


async def test_a_negative_estimate_is_a_bug(limiter: LocalLimiter) -> None:
    with pytest.raises(ValueError, match="negative"):
        await limiter.admit("key-1", "fast", Quota(tpm=10), -1)
