"""Each key's requests in flight at once, against its `max_concurrent`: a tenant's own excess is a 429.

Counted in this worker's memory, not in Redis: a shared count would need a lease per request, renewed for as
long as a stream runs (a replica that died would otherwise hold its slots for good), and a Redis round trip
before the tier's queue - the place where a refusal must cost nothing. So the cap holds per worker: behind
N workers a key may have up to N x `max_concurrent` requests in flight (docs/keys-and-limits.md).
"""

from __future__ import annotations

from gateway.refusals import Refusal

__all__ = ["Concurrency", "Lease", "concurrency_refusal"]


def concurrency_refusal(limit: int) -> Refusal:
    """The one more request's answer: 429 `concurrency_limit_exceeded`; a place frees when one ends."""
    return Refusal(
        "rate_limited",
        f"This API key has {limit} requests in flight, its limit (max_concurrent); retry when one ends.",
        code="concurrency_limit_exceeded",
        headers={"retry-after": "1", "retry-after-ms": "1000"},
    )


class Lease:
    """One request's place among its key's; `release` (once, at the request's end: gateway.http.dispatch)
    gives it back. Releasing again does nothing."""

    __slots__ = ("_key_id", "_owner")

    def __init__(self, owner: Concurrency, key_id: str) -> None:
        self._owner: Concurrency | None = owner
        self._key_id = key_id

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._release(self._key_id)


class Concurrency:
    """Requests in flight per key id in this worker; `refused` counts the requests refused."""

    __slots__ = ("_in_flight", "refused")

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}  # only keys with requests in flight: it never outgrows them
        self.refused = 0

    def take(self, key_id: str, limit: int) -> Lease | None:
        """A place for one more of the key's requests, or None when `limit` are in flight already."""
        count = self._in_flight.get(key_id, 0)
        if count >= limit:
            self.refused += 1
            return None
        self._in_flight[key_id] = count + 1
        return Lease(self, key_id)

    def in_flight(self, key_id: str) -> int:
        return self._in_flight.get(key_id, 0)

    def _release(self, key_id: str) -> None:
        count = self._in_flight[key_id] - 1
        if count:
            self._in_flight[key_id] = count
        else:
            del self._in_flight[key_id]
