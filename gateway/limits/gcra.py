"""GCRA for per-minute limits, as pure integer arithmetic shared by the local and the Redis limiter.

GCRA keeps a theoretical arrival time (TAT): each admitted unit of cost pushes it `60 s / limit` further,
and a request passes if the TAT it would leave stays within one minute of now. A fresh bucket therefore
admits `limit` units at once (the burst), then one every `60 s / limit`.

`60 s / limit` is rarely a whole number of milliseconds (rpm=7: 8571.43 ms), and float TATs make the
burst off by one at the edge. So the state is kept as the equivalent pair (time in ms, level), where
`level = (TAT - time) * limit`: the bucket's fill in units of 1/60000 of a request or token. A unit of
cost adds SCALE, a millisecond drains `limit`, and the bucket holds `limit * SCALE`: all exact integers
(below 2**53, so Lua's doubles in Redis agree with Python, for limits up to ~1.5e11 per minute).
The TAT is `time + level / limit` ms at any moment.
"""

from __future__ import annotations

__all__ = ["SCALE", "capacity", "drained", "remaining", "reset_ms", "settled", "wait_ms"]

SCALE = 60_000  # ms per minute


def capacity(limit: int) -> int:
    return limit * SCALE


def drained(level: int, since_ms: int, now_ms: int, limit: int) -> int:
    """The level at `now_ms` of a bucket that was at `level` at `since_ms`.

    A clock that went backwards (another Redis after a failover) drains nothing rather than
    filling the bucket up."""
    return max(0, level - max(0, now_ms - since_ms) * limit)


def wait_ms(level: int, limit: int, cost: int) -> int:
    """Milliseconds until a request of `cost` fits in a bucket at `level` (0: it fits now)."""
    over = level + cost * SCALE - capacity(limit)
    return 0 if over <= 0 else -(-over // limit)


def remaining(level: int, limit: int) -> int:
    """Whole units that would still be admitted now."""
    return max(0, (capacity(limit) - level) // SCALE)


def reset_ms(level: int, limit: int) -> int:
    """Milliseconds until the bucket is empty, i.e. the whole limit is available again."""
    return -(-level // limit)


def settled(level: int, limit: int, delta: int) -> int:
    """The level after charging (delta > 0) or refunding (delta < 0) `delta` units.

    Clamped to the bucket: a refund cannot make more than the whole limit available, and a charge
    beyond the limit is not carried as debt past one minute of waiting."""
    return min(capacity(limit), max(0, level + delta * SCALE))
