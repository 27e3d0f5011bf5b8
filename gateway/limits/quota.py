"""A key's rate limits in one tier."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Quota"]


@dataclass(frozen=True, slots=True)
class Quota:
    """Requests per minute and tokens per minute; None means no limit on that dimension."""

    rpm: int | None = None
    tpm: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None
