"""Choosing a replica: a pure function of a snapshot of the replicas' state and the clock.

Three policies (docs/routing.md):

- `least_outstanding`: the routable replica with the fewest requests this gateway has in flight there;
- `round_robin`: the next routable replica in turn, whatever its load (a baseline for benchmarks);
- `tiergate` (the default): least *score*, where the score adds to the in-flight count what the engine itself
  reports (its queue and KV-cache usage) while that report is fresh; and a request that carries an affinity
  key goes to the replica consistent hashing gives the key, as long as that replica's load is within
  `load_factor` times the average (consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam
  2018), else to the next replica on the ring that is.

With no fresh engine stats and no affinity key, `tiergate` chooses exactly as `least_outstanding` does.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "HashRing",
    "ReplicaState",
    "RoutingMode",
    "RoutingPolicy",
    "choose",
    "choose_replica",
    "key_point",
    "routable",
    "score",
]

RoutingMode = Literal["round_robin", "least_outstanding", "tiergate"]


@dataclass(frozen=True, slots=True)
class ReplicaState:
    outstanding: int  # requests this gateway has in flight there
    healthy: bool | None  # the last active check: None before the first one
    ejected_until: float  # passive ejection (circuit breaker) lasts until this monotonic time
    # What the engine last reported of itself (engines/engine_stats.py), None when never scraped
    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None
    stats_at: float | None = None  # when those were scraped (the same monotonic clock)


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    mode: RoutingMode = "tiergate"
    # A request waiting in the engine's queue counts once more on top of its in-flight count: queued work
    # delays every newcomer by a whole slot's turnover, running work only shares the decode steps.
    wait_weight: float = 1.0
    # A full KV cache (1.0) counts as this many more requests: near it, the engine preempts and recomputes.
    kv_weight: float = 4.0
    stale_after_s: float = 5.0  # engine stats older than this are ignored
    load_factor: float = 1.25  # c of bounded-load consistent hashing


def routable(state: ReplicaState, now: float) -> bool:
    return state.healthy is not False and state.ejected_until <= now


def score(state: ReplicaState, now: float, policy: RoutingPolicy) -> float:
    """The replica's load as routing sees it: in-flight requests, plus the engine's queue and KV usage
    weighted, when its stats are at most `stale_after_s` old."""
    load: float = state.outstanding
    if state.stats_at is not None and now - state.stats_at <= policy.stale_after_s:
        if state.waiting is not None:
            load += policy.wait_weight * state.waiting
        if state.kv_usage is not None:
            load += policy.kv_weight * state.kv_usage
    return load


def choose_replica(
    states: Sequence[ReplicaState], now: float, *, exclude: Collection[int] = (), start: int = 0
) -> int | None:
    """The routable replica with the fewest outstanding requests, or None.

    Ties go to the first one at or after `start`, so that a caller rotating `start` spreads an idle
    pool's requests over all replicas instead of piling them on the first.
    """
    best: int | None = None
    best_load = 0
    count = len(states)
    for offset in range(count):
        index = (start + offset) % count
        state = states[index]
        if index in exclude or not routable(state, now):
            continue
        if best is None or state.outstanding < best_load:
            best, best_load = index, state.outstanding
    return best


def key_point(key: str) -> int:
    """Where an affinity key falls on the ring: the same in every process (unlike `hash()`), so every
    gateway worker sends a key to the same replica. CRC-32 then a multiplicative mix: cheap."""
    return (zlib.crc32(key.encode("utf-8", "surrogatepass")) * 0x9E3779B1) & 0xFFFFFFFF


class HashRing:
    """A consistent-hash ring over replica names, `vnodes` points per replica. Built once per pool; for each
    point it keeps the order in which walking clockwise from there meets the replicas, so a lookup is one
    bisection. Removing a replica (or skipping one that is down) moves only the keys that were on it."""

    __slots__ = ("_orders", "_points", "size")

    def __init__(self, names: Sequence[str], vnodes: int = 64) -> None:
        self.size = len(names)
        placed: list[tuple[int, int]] = []
        for index, name in enumerate(names):
            for v in range(vnodes):
                digest = hashlib.blake2b(f"{name}#{v}".encode(), digest_size=4).digest()
                placed.append((int.from_bytes(digest, "big"), index))
        placed.sort()
        self._points = [point for point, _ in placed]
        owners = [index for _, index in placed]
        orders: list[tuple[int, ...]] = []
        total = len(owners)
        for i in range(total):
            order: list[int] = []
            for j in range(total):
                owner = owners[(i + j) % total]
                if owner not in order:
                    order.append(owner)
                    if len(order) == self.size:
                        break
            orders.append(tuple(order))
        self._orders = orders

    def walk(self, point: int) -> tuple[int, ...]:
        """Replica indices in ring order from `point`: the key's owner first."""
        if not self._orders:
            return ()
        return self._orders[bisect.bisect_left(self._points, point) % len(self._orders)]


def choose(
    states: Sequence[ReplicaState],
    now: float,
    *,
    policy: RoutingPolicy = RoutingPolicy(),
    exclude: Collection[int] = (),
    start: int = 0,
    affinity: int | None = None,
    ring: HashRing | None = None,
) -> int | None:
    """The replica for one request under `policy`, or None when none is routable.

    `start` rotates ties (and is the turn of round-robin); `affinity` is the request's `key_point`, used
    with `ring` (built over the same replicas, in the same order) by the `tiergate` mode only.
    """
    mode = policy.mode
    if mode == "least_outstanding":
        return choose_replica(states, now, exclude=exclude, start=start)
    count = len(states)
    if mode == "round_robin":
        for offset in range(count):
            index = (start + offset) % count
            if index not in exclude and routable(states[index], now):
                return index
        return None
    loads: list[float | None] = [None] * count
    best: int | None = None
    best_load = 0.0
    total = 0.0
    candidates = 0
    for offset in range(count):
        index = (start + offset) % count
        state = states[index]
        if index in exclude or not routable(state, now):
            continue
        load = score(state, now, policy)
        loads[index] = load
        total += load
        candidates += 1
        if best is None or load < best_load:
            best, best_load = index, load
    if best is None or affinity is None or ring is None or ring.size != count:
        return best
    # bounded loads: a replica may take the key while its load, this request included, stays within
    # ceil(c * the average load, this request included)
    bound = math.ceil(policy.load_factor * (total + 1) / candidates)
    for index in ring.walk(affinity):
        candidate = loads[index]
        if candidate is not None and candidate + 1 <= bound:
            return index
    return best
