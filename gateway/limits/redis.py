"""Limits shared by every gateway replica through one Redis: one script call, one round trip, per admit.

Redis being down, slow or restarting must not take the gateway with it: every call is bounded by
`timeout_s`, and a failure either lets the request through (`fail_open`, the default: a limiter is not
worth an outage) or raises LimiterUnavailable. The connection pool reconnects by itself once Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from engines.loop_lag import LoopLag
from gateway.database.redis_link import UNAVAILABLE, RedisLink, SoonFlush
from gateway.limits.admission import ALLOWED, Admission, Reservation, decided, reserved_tokens
from gateway.limits.limiter import LimiterUnavailable
from gateway.limits.quota import Quota
from gateway.limits.scripts import ADMIT, SETTLE

__all__ = ["RedisLimiter"]

log = logging.getLogger("tiergate.limits")


class RedisLimiter:
    """GCRA buckets in Redis, keyed `{prefix}rl:{<subject>:<tier>}:r` and `...:t`.

    The braces are a Redis Cluster hash tag: one script touches both keys of a request, so they must
    share a slot. `failures` counts the Redis calls that failed (admits and settles), for metrics."""

    remote = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tiergate:",
        fail_open: bool = True,
        timeout_s: float = 0.25,
        max_connections: int = 512,
        settle_delay_s: float = 0.0,
        gather: Callable[[], bool] | None = None,
        lag: LoopLag | None = None,
    ) -> None:
        # Settlements go out together, one pipeline per batch, the deltas of one bucket summed: a round trip
        # per request for them cost as much gateway CPU as the admit. A batch leaves as soon as the loop is
        # free (settle_delay_s later, when set: with `gather`, only while it says other requests may settle
        # meanwhile), and each request awaits its own before its response ends.
        self._pending: dict[tuple[str, str], tuple[int, int]] = {}  # (subject, tier) -> (tpm, summed delta)
        self._flusher = SoonFlush(settle_delay_s, self.flush, only_if=gather)
        self._prefix = prefix
        self._fail_open = fail_open
        self._link = RedisLink(
            url,
            timeout_s=timeout_s,
            max_connections=max_connections,
            log=log,
            user="rate limiter",
            fail_open=fail_open,
            open_means="letting requests through",
            lag=lag,
        )
        self._redis = self._link.redis
        # EVALSHA, falling back to loading the script once (and again after Redis restarts empty)
        self._admit = self._redis.register_script(ADMIT)
        self._settle = self._redis.register_script(SETTLE)

    @property
    def failures(self) -> int:
        return self._link.failures

    async def admit(self, subject: str, tier: str, quota: Quota, tokens: int) -> Admission:
        cost = reserved_tokens(tokens, quota.tpm)
        if quota.unlimited:
            return ALLOWED
        keys = self._keys(subject, tier)
        try:
            reply = await self._link.call(self._admit, keys, [quota.rpm or 0, quota.tpm or 0, cost])
        except UNAVAILABLE as exc:
            self._link.failed("admit", exc)
            if not self._fail_open:
                raise LimiterUnavailable(f"the rate limiter's Redis is unavailable: {exc!r}") from exc
            return ALLOWED
        wait, requests_level, tokens_level = (int(value) for value in reply)
        return decided(subject, tier, quota, cost, wait, requests_level, tokens_level)

    def settle(self, reservation: Reservation, used_tokens: int) -> asyncio.Future[None] | None:
        delta = max(0, used_tokens) - reservation.tokens
        if reservation.tpm is None or delta == 0:
            return None
        bucket = (reservation.subject, reservation.tier)
        _, pending = self._pending.get(bucket, (reservation.tpm, 0))
        self._pending[bucket] = (reservation.tpm, pending + delta)
        return self._flusher.kick()

    async def flush(self) -> None:
        """Send every pending settlement now, in one pipeline. Never raises."""
        batch, self._pending = self._pending, {}
        if not batch:
            return
        calls = (
            (self._keys(subject, tier)[1:], [tpm, delta]) for (subject, tier), (tpm, delta) in batch.items()
        )
        await self._link.settle(self._settle, calls, f"{len(batch)} buckets")

    async def aclose(self) -> None:
        await self._flusher.stop()
        await self.flush()  # what was pending still counts
        await self._link.aclose()

    def _keys(self, subject: str, tier: str) -> list[str]:
        base = f"{self._prefix}rl:{{{subject}:{tier}}}:"
        return [base + "r", base + "t"]
