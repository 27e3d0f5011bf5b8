"""What one dimension of a limit looks like to the client, and OpenAI's way of writing durations."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.limits import gcra

__all__ = ["Window", "format_duration"]


@dataclass(frozen=True, slots=True)
class Window:
    """What one dimension's x-ratelimit-* headers say."""

    limit: int  # the per-minute limit
    remaining: int  # what could still be admitted right now (>= 0)
    reset_s: float  # seconds until the bucket is completely full again

    @classmethod
    def of(cls, level: int, limit: int) -> Window:
        return cls(limit, gcra.remaining(level, limit), gcra.reset_ms(level, limit) / 1000)


def format_duration(seconds: float) -> str:
    """A duration as OpenAI writes it in x-ratelimit-reset-* (Go's time.Duration, to the millisecond):
    "0s", "6ms", "1s", "1.5s", "1m30s", "6m0s", "1h0m0s"."""
    ms = max(0, round(seconds * 1000))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    whole, fraction = divmod(ms, 1000)
    text = f"{whole}.{fraction:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text
