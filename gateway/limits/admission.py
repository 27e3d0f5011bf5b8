"""A limiter's answer to one request, and the OpenAI headers that tell the client about it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.limits.quota import Quota
from gateway.limits.window import Window, format_duration

__all__ = ["ALLOWED", "Admission", "Reservation", "decided", "reserved_tokens"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """What settle() needs to square a request's token estimate with what it really used."""

    subject: str
    tier: str
    tokens: int  # tokens reserved at admission (0 if no TPM limit)
    tpm: int | None


# each dimension's header names: limit, remaining, reset
_NAMES = tuple(
    tuple(f"x-ratelimit-{what}-{dimension}".encode() for what in ("limit", "remaining", "reset"))
    for dimension in ("requests", "tokens")
)


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    requests: Window | None  # None when the quota has no rpm (or when failing open)
    tokens: Window | None  # None when the quota has no tpm (or when failing open)
    retry_after_s: float | None  # when refused: the earliest time a retry of the same request can pass
    reservation: Reservation | None  # when admitted with a tpm: pass to settle()

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's x-ratelimit-* headers for the dimensions that exist, and retry-after(-ms) when refused."""
        present = [
            (names, w) for names, w in zip(_NAMES, (self.requests, self.tokens), strict=True) if w is not None
        ]
        headers = [(names[0], b"%d" % w.limit) for names, w in present]
        headers += [(names[1], b"%d" % w.remaining) for names, w in present]
        headers += [(names[2], format_duration(w.reset_s).encode()) for names, w in present]
        if not self.allowed and self.retry_after_s is not None:
            # round() first: a wait of whole ms comes back from seconds as e.g. 8571.000000000001
            ms = max(1, math.ceil(round(self.retry_after_s * 1000, 3)))
            headers.append((b"retry-after", b"%d" % max(1, math.ceil(ms / 1000))))
            headers.append((b"retry-after-ms", b"%d" % ms))
        return headers


# Quota() and failing open: nothing to report, nothing to settle.
ALLOWED = Admission(allowed=True, requests=None, tokens=None, retry_after_s=None, reservation=None)


def reserved_tokens(tokens: int, tpm: int | None) -> int:
    """What a request reserves of its tpm. An estimate above the whole limit is clamped to it (the gateway
    refuses such a request before it reaches a limiter, saying why; a limiter alone would admit it on an
    idle bucket rather than refuse it forever); settling then charges what it really used, up to one full
    minute of the limit."""
    if tokens < 0:
        raise ValueError(f"a token estimate cannot be negative, not {tokens}")
    return 0 if tpm is None else min(tokens, tpm)


def decided(
    subject: str, tier: str, quota: Quota, cost: int, wait_ms: int, requests_level: int, tokens_level: int
) -> Admission:
    """The Admission for a decision a limiter took: levels are after consumption when admitted
    (wait_ms == 0), as they stand when refused."""
    allowed = wait_ms == 0
    return Admission(
        allowed=allowed,
        requests=None if quota.rpm is None else Window.of(requests_level, quota.rpm),
        tokens=None if quota.tpm is None else Window.of(tokens_level, quota.tpm),
        retry_after_s=None if allowed else wait_ms / 1000,
        reservation=Reservation(subject, tier, cost, quota.tpm)
        if allowed and quota.tpm is not None
        else None,
    )
