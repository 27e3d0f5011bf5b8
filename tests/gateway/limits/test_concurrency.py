"""A key's requests in flight against its `max_concurrent`: places taken, refused past it, given back once."""

from __future__ import annotations

from gateway.limits import Concurrency, concurrency_refusal


def test_places_are_taken_up_to_the_limit_and_given_back_once() -> None:
    concurrency = Concurrency()
    first, second = concurrency.take("k1", 2), concurrency.take("k1", 2)
    assert first is not None and second is not None
    assert concurrency.take("k1", 2) is None and concurrency.refused == 1
    assert concurrency.take("k2", 1) is not None  # another key's count is its own
    first.release()
    first.release()  # again: nothing (gateway.http.dispatch and a late path may both end a request)
    assert concurrency.in_flight("k1") == 1
    third = concurrency.take("k1", 2)
    assert third is not None and concurrency.take("k1", 2) is None
    second.release()
    third.release()
    assert concurrency.in_flight("k1") == 0 and "k1" not in concurrency._in_flight  # nothing kept for it


def test_the_refusal_is_a_429_with_retry_after() -> None:
    refusal = concurrency_refusal(4)
    assert refusal.code == "concurrency_limit_exceeded" and "4 requests in flight" in refusal.message
    assert refusal.headers == {"retry-after": "1", "retry-after-ms": "1000"}
