"""Per-key, per-tier rate limits: requests and tokens per minute, OpenAI style, by GCRA.

    RateLimiter        the interface: admit() before a request, settle() after it
    ├── LocalLimiter   in this process (one replica, development, tests)
    └── RedisLimiter   shared by every replica through Redis; fails open (or raises LimiterUnavailable)

A request is admitted only if both its RPM and its TPM checks pass, and then both are consumed; a
refusal consumes neither. Its token cost is an estimate reserved at admission (prompt + max output
tokens, clamped to the whole TPM limit so it can pass on an idle bucket) and squared with the real
count by settle(), or released by settle(reservation, 0) when the request failed.

A key's `max_concurrent` caps its requests in flight at once (`Concurrency`, per worker): the one more is a
429 `concurrency_limit_exceeded`.
"""

from gateway.limits.admission import Admission, Reservation
from gateway.limits.concurrency import Concurrency, Lease, concurrency_refusal
from gateway.limits.limiter import LimiterUnavailable, RateLimiter
from gateway.limits.local import LocalLimiter
from gateway.limits.quota import MAX_PER_MINUTE, Quota
from gateway.limits.redis import RedisLimiter
from gateway.limits.window import Window

__all__ = [
    "MAX_PER_MINUTE",
    "Admission",
    "Concurrency",
    "Lease",
    "LimiterUnavailable",
    "LocalLimiter",
    "Quota",
    "RateLimiter",
    "RedisLimiter",
    "Reservation",
    "Window",
    "concurrency_refusal",
]
