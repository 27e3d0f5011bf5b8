"""A key's rate limits in one tier."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_PER_MINUTE", "Quota"]

# GCRA's integers stay exact in Redis' doubles up to about 1.5e11 per minute (gateway/limits/gcra.py)
MAX_PER_MINUTE = 10**11


@dataclass(frozen=True, slots=True)
class Quota:
    """Requests per minute and tokens per minute; None means no limit on that dimension."""

    rpm: int | None = None
    tpm: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PER_MINUTE
            ):
                raise ValueError(
                    f"{name} must be an integer from 1 to {MAX_PER_MINUTE} or None, not {value!r}"
                )

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None
