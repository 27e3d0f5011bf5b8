"""Authentication on the hot path: a presented key checked against a short-lived cache of the store.

Revocation works by expiry of this cache, not by messages between replicas: every replica re-reads a key
at most `cache_ttl_s` after it last read it, so a revoked key is refused everywhere within that TTL
(1 s by default) with no pub/sub, no shared cache and no coordination. The price is at most one database
read per key per TTL per replica, and the same for unknown ids (cached as negative entries), so a
client retrying a wrong key cannot turn each retry into a query.

When the store cannot answer (unreachable, or not within `lookup_timeout_s`), a key read from it in the
last `stale_while_unavailable_s` is taken as it was last read: an outage of the database does not stop
the traffic of keys already seen. The price: a key revoked meanwhile (by a replica that can still reach
the store) is served until this one can reach it too. While the outage lasts, one request every half
second asks the store again (the others are served at once); the first answer ends the outage, and from
then on keys are read before use again, so a revocation is honoured as soon as the store answers. A key not
read recently gets DatabaseUnavailable (a 503) as soon as its lookup fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from engines.loop_lag import LoopLag
from gateway.database import DatabaseUnavailable
from gateway.keys._exceptions import AuthError
from gateway.keys.material import parse_key, secret_matches
from gateway.keys.records import ApiKey
from gateway.keys.store import KeyStore

__all__ = ["Authenticator"]

log = logging.getLogger("tiergate.keys")

_ASK_AGAIN_S = 0.5  # during an outage, how often a request asks the store again


@dataclass(frozen=True, slots=True)
class _Entry:
    fresh_until: float  # on the monotonic clock
    key: ApiKey | None  # None: no such key
    digest: bytes
    expires_at: float | None  # the key's expiry as a wall-clock timestamp, compared on every call


@dataclass(slots=True)
class _Outage:
    since: float
    ask_at: float  # when a request may next ask the store
    served: int = 0  # requests served from the cache
    refused: int = 0  # requests refused: their key was not read recently enough


class Authenticator:
    """Checks presented keys: `authenticate` returns the key or raises AuthError with a reason.

    Lookups are cached for `cache_ttl_s` (hits and misses alike), and concurrent misses for one key
    share a single lookup. Expiry is checked against the wall clock on every call. Last-used times are
    kept in memory and written in one batch every `flush_interval_s` by the task `start()` runs, and a
    last time by `aclose()`: a request never waits on a database write.

    Database failures on a cache miss propagate as `gateway.database.DatabaseError` (a 503 to the
    client), not as AuthError: an outage is not a wrong key. A lookup that does not answer within
    `lookup_timeout_s` is DatabaseUnavailable; during an outage, keys read before are served from the
    cache (see the module's docstring).
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        cache_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        flush_interval_s: float = 5.0,
        max_cached: int = 100_000,
        stale_while_unavailable_s: float = 900.0,
        lookup_timeout_s: float = 1.0,
        lag: LoopLag | None = None,
    ) -> None:
        """`lag`: the worker's loop lag; with it, `lookup_timeout_s` counts only the time the loop was free (a
        key store that answered while our own loop was busy is not an outage)."""
        if cache_ttl_s < 0 or flush_interval_s <= 0 or max_cached < 1:
            raise ValueError("cache_ttl_s must be >= 0, flush_interval_s > 0 and max_cached >= 1")
        if stale_while_unavailable_s < 0 or lookup_timeout_s <= 0:
            raise ValueError("stale_while_unavailable_s must be >= 0 and lookup_timeout_s > 0")
        self._store = store
        self._ttl = cache_ttl_s
        self._stale_s = stale_while_unavailable_s
        self._lookup_timeout_s = lookup_timeout_s
        self._lag = lag
        self._clock = clock
        self._wall_clock = wall_clock
        self._flush_interval_s = flush_interval_s
        self._max_cached = max_cached
        self._cache: dict[str, _Entry] = {}  # oldest first: a full cache drops from the front
        self._loading: dict[str, asyncio.Task[_Entry]] = {}
        self._last_used: dict[str, float] = {}  # key id -> wall-clock time, not yet written
        self._flusher: asyncio.Task[None] | None = None
        self._outage: _Outage | None = None  # the store's, while it lasts

    def __repr__(self) -> str:
        return f"Authenticator(cache_ttl_s={self._ttl}, cached={len(self._cache)})"

    async def authenticate(self, presented: str | None) -> ApiKey:
        if not presented or presented.isspace():
            raise AuthError("missing")
        parsed = parse_key(presented)
        if parsed is None:
            raise AuthError("malformed")
        key_id, secret = parsed
        entry = self._cache.get(key_id)
        if entry is None or entry.fresh_until <= self._clock():
            entry = await self._refreshed(key_id, entry)
        key = entry.key
        # a wrong secret reads as an unknown key: the answer must not confirm that an id exists
        if key is None or not secret_matches(secret, entry.digest):
            raise AuthError("unknown")
        if key.revoked:
            raise AuthError("revoked", key_id=key_id)
        now = self._wall_clock()
        if entry.expires_at is not None and now >= entry.expires_at:
            raise AuthError("expired", key_id=key_id)
        self._last_used[key_id] = now
        return key

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget one cached key (or all), e.g. right after this process revoked or changed it."""
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(key_id, None)

    # -- the cache ----------------------------------------------------------------------------------
    async def _refreshed(self, key_id: str, cached: _Entry | None) -> _Entry:
        """The key read again, or, while the store cannot answer, `cached` if it is recent enough."""
        now = self._clock()
        usable = cached is not None and now < cached.fresh_until + self._stale_s
        outage = self._outage
        if outage is not None:
            if cached is not None and usable and now < outage.ask_at:
                outage.served += 1
                return cached
            outage.ask_at = now + _ASK_AGAIN_S  # this request asks; the next ones in that time do not
        try:
            return await self._load(key_id)
        except DatabaseUnavailable as exc:
            outage = self._unavailable(exc)
            if cached is None or not usable:
                outage.refused += 1
                raise
            outage.served += 1
            return cached

    async def _load(self, key_id: str) -> _Entry:
        task = self._lookup_task(key_id)
        try:
            # shielded: a caller that gives up must not cancel the lookup the others are waiting for
            timeout_s = self._lookup_timeout_s
            async with asyncio.timeout(timeout_s) if self._lag is None else self._lag.deadline(timeout_s):
                return await asyncio.shield(task)
        except TimeoutError:
            raise DatabaseUnavailable(
                f"the key store did not answer within {self._lookup_timeout_s:g}s"
            ) from None

    def _lookup_task(self, key_id: str) -> asyncio.Task[_Entry]:
        task = self._loading.get(key_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._lookup(key_id))
            self._loading[key_id] = task
            task.add_done_callback(lambda done: self._loaded(key_id, done))
        return task

    def _unavailable(self, exc: DatabaseUnavailable) -> _Outage:
        if self._outage is None:
            self._outage = _Outage(self._clock(), self._clock() + _ASK_AGAIN_S)
            log.warning(
                "the key store cannot answer (%s): keys read in the last %gs are served as last read, others"
                " get 503 key_store_unavailable, until it answers again",
                exc,
                self._stale_s,
            )
        return self._outage

    async def _lookup(self, key_id: str) -> _Entry:
        # fresh from when the read began: a revocation committed after it is refused within the TTL
        fresh_until = self._clock() + self._ttl
        found = await self._store.lookup(key_id)
        if found is None:
            entry = _Entry(fresh_until, None, b"", None)
        else:
            key, digest = found
            expires_at = key.expires_at.timestamp() if key.expires_at is not None else None
            entry = _Entry(fresh_until, key, digest, expires_at)
        self._remember(key_id, entry)
        outage, self._outage = self._outage, None
        if outage is not None:
            log.warning(
                "the key store answers again after %.1fs: keys are read before use again (%d requests served"
                " from the cache meanwhile, %d refused)",
                self._clock() - outage.since,
                outage.served,
                outage.refused,
            )
        return entry

    def _loaded(self, key_id: str, task: asyncio.Task[_Entry]) -> None:
        if self._loading.get(key_id) is task:
            del self._loading[key_id]
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited any more is not logged as lost

    def _remember(self, key_id: str, entry: _Entry) -> None:
        self._cache.pop(key_id, None)  # re-inserted at the end: the newest entry
        if len(self._cache) >= self._max_cached:
            now = self._clock()
            for stale in [cached for cached, old in self._cache.items() if old.fresh_until <= now]:
                del self._cache[stale]
            while len(self._cache) >= self._max_cached:  # a flood of fresh ids: drop the oldest
                del self._cache[next(iter(self._cache))]
        self._cache[key_id] = entry

    # -- last-used times ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start writing last-used times in the background (call from the running event loop)."""
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="keys:last-used")

    async def aclose(self) -> None:
        task, self._flusher = self._flusher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.flush()
        except DatabaseUnavailable as exc:  # shutting down: nothing would be left to try again
            log.warning("last-used times of API keys not written at exit: %s", exc)

    async def flush(self) -> None:
        """Write the last-used times gathered since the last flush, in one batch."""
        if not self._last_used:
            return
        batch, self._last_used = self._last_used, {}
        try:
            await self._store.record_use(
                {key_id: datetime.fromtimestamp(t, UTC) for key_id, t in batch.items()}
            )
        except BaseException:
            for key_id, used in batch.items():  # kept for the next flush; a use since then is newer
                self._last_used.setdefault(key_id, used)
            raise

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval_s)
            try:
                await self.flush()
            except DatabaseUnavailable:  # an outage, logged by the database; the times wait for its end
                pass
            except Exception:  # a flusher that died would stop last-used times for good
                log.exception(
                    "writing last-used times of API keys failed; retrying in %gs", self._flush_interval_s
                )
