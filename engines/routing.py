"""Choosing a replica: a pure function of a snapshot of the replicas' state and the clock."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

__all__ = ["ReplicaState", "choose_replica"]


@dataclass(frozen=True, slots=True)
class ReplicaState:
    outstanding: int  # requests this gateway has in flight there
    healthy: bool | None  # the last active check: None before the first one
    ejected_until: float  # passive ejection (circuit breaker) lasts until this monotonic time


def routable(state: ReplicaState, now: float) -> bool:
    return state.healthy is not False and state.ejected_until <= now


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
