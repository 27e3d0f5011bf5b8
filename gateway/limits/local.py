"""Limits kept in this process: for a single gateway replica, for development, and for tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.limits import gcra
from gateway.limits.admission import ALLOWED, Admission, Reservation, decided, reserved_tokens
from gateway.limits.quota import Quota

__all__ = ["LocalLimiter"]

_SWEEP_EVERY_MS = 60_000  # a bucket drains completely within a minute of its last update


@dataclass(frozen=True, slots=True)
class _Bucket:
    level: int  # see gcra: the fill in 1/60000ths of a request or token
    at_ms: int  # when it had that level
    empty_at_ms: int  # when it will have drained, at the limit it was last written with


class LocalLimiter:
    """GCRA buckets in a dict, one per (subject, tier, dimension).

    Decisions never await, so on one event loop each admit and settle is atomic without a lock. The dict
    only holds buckets that are not yet full again: a bucket that drained is dropped when next read, and
    a sweep once a minute drops those nobody read since, so memory follows the keys active in the last
    minute rather than every key ever seen."""

    remote = False

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # seconds
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}
        self._next_sweep_ms = self._now_ms() + _SWEEP_EVERY_MS

    def __len__(self) -> int:
        """Buckets held: for tests and metrics."""
        return len(self._buckets)

    async def admit(self, subject: str, tier: str, quota: Quota, tokens: int) -> Admission:
        cost = reserved_tokens(tokens, quota.tpm)
        if quota.unlimited:
            return ALLOWED
        now = self._now_ms()
        self._sweep(now)
        requests_key, tokens_key = (subject, tier, "r"), (subject, tier, "t")
        requests_level = self._level(requests_key, quota.rpm, now)
        tokens_level = self._level(tokens_key, quota.tpm, now)
        wait = max(
            gcra.wait_ms(requests_level, quota.rpm, 1) if quota.rpm else 0,
            gcra.wait_ms(tokens_level, quota.tpm, cost) if quota.tpm else 0,
        )
        if wait == 0:  # both pass: consume both
            if quota.rpm:
                requests_level += gcra.SCALE
                self._store(requests_key, requests_level, quota.rpm, now)
            if quota.tpm:
                tokens_level += cost * gcra.SCALE
                self._store(tokens_key, tokens_level, quota.tpm, now)
        return decided(subject, tier, quota, cost, wait, requests_level, tokens_level)

    def settle(self, reservation: Reservation, used_tokens: int) -> None:
        delta = max(0, used_tokens) - reservation.tokens
        if reservation.tpm is None or delta == 0:
            return
        now = self._now_ms()
        key = (reservation.subject, reservation.tier, "t")
        level = gcra.settled(self._level(key, reservation.tpm, now), reservation.tpm, delta)
        self._store(key, level, reservation.tpm, now)  # applied: nothing to wait for

    async def flush(self) -> None:
        pass  # settlements apply at once

    async def aclose(self) -> None:
        self._buckets.clear()

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    def _level(self, key: tuple[str, str, str], limit: int | None, now: int) -> int:
        bucket = self._buckets.get(key)
        if bucket is None or limit is None:
            return 0
        level = gcra.drained(bucket.level, bucket.at_ms, now, limit)
        if level == 0:
            del self._buckets[key]
        return level

    def _store(self, key: tuple[str, str, str], level: int, limit: int, now: int) -> None:
        if level == 0:
            self._buckets.pop(key, None)  # full again: nothing worth keeping
        else:
            self._buckets[key] = _Bucket(level, now, now + gcra.reset_ms(level, limit))

    def _sweep(self, now: int) -> None:
        if now < self._next_sweep_ms:
            return
        self._next_sweep_ms = now + _SWEEP_EVERY_MS
        for key in [key for key, bucket in self._buckets.items() if bucket.empty_at_ms <= now]:
            del self._buckets[key]
