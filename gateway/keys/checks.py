"""What the key store accepts: each field of a tenant or key checked (a ValueError says why), normalised."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from gateway.limits.quota import Quota
from pricing import PRIORITY_CLASSES

__all__ = ["aware", "max_concurrent", "models", "names", "priority_class", "quotas", "text", "tiers"]


def text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    return value


def names(values: Iterable[str], what: str) -> frozenset[str]:
    if isinstance(values, str):  # a lone string would be taken for its characters
        raise ValueError(f"{what} must be a collection of names, not the string {values!r}")
    found = frozenset(values)
    bad = sorted(repr(name) for name in found if not isinstance(name, str) or not name)
    if bad:
        raise ValueError(f"{what} must be non-empty strings, not {', '.join(bad)}")
    if not found:
        raise ValueError(f"{what} must name at least one")
    return found


def tiers(tiers: Iterable[str]) -> frozenset[str]:
    return names(tiers, "tiers")


def models(models: Iterable[str] | None) -> frozenset[str] | None:
    # an empty list would grant nothing: None is how a key gets every model
    return names(models, "models") if models is not None else None


def quotas(quotas: Mapping[str, Quota], tiers: frozenset[str]) -> Mapping[str, Quota]:
    stray = sorted(set(quotas) - tiers)
    if stray:
        raise ValueError(f"quotas for tiers the key does not have: {', '.join(map(repr, stray))}")
    for tier, quota in quotas.items():
        if not isinstance(quota, Quota):
            raise ValueError(f"the quota for tier {tier!r} must be a Quota, not {type(quota).__name__}")
    return MappingProxyType(dict(sorted(quotas.items())))


def priority_class(value: object) -> str:
    if value not in PRIORITY_CLASSES:
        raise ValueError(f"priority class must be one of {', '.join(PRIORITY_CLASSES)}, not {value!r}")
    return str(value)


def max_concurrent(value: object) -> int | None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"max_concurrent must be a whole number >= 1 (or none), not {value!r}")
    return value


def aware(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, not {value!r}")
    return value.astimezone(UTC)
