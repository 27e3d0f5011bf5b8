"""Typed reads from decoded JSON objects, for `from_dict`: each names the key it found wrong."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

__all__ = [
    "format_utc",
    "get_bool",
    "get_int",
    "get_opt_bool",
    "get_opt_float",
    "get_opt_int",
    "get_opt_str",
    "get_opt_time",
    "get_str",
    "get_time",
    "require_keys",
]


def require_keys(data: Mapping[str, object], keys: tuple[str, ...], what: str) -> None:
    """Exactly these keys: a missing one is a truncated row, an extra one a newer writer we cannot read."""
    missing = [key for key in keys if key not in data]
    extra = sorted(key for key in data if key not in keys)
    if missing or extra:
        raise ValueError(f"{what}: missing keys {missing}, unknown keys {extra}")


def get_str(data: Mapping[str, object], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string, got {value!r}")
    return value


def get_opt_str(data: Mapping[str, object], key: str) -> str | None:
    return None if data[key] is None else get_str(data, key)


def get_int(data: Mapping[str, object], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    return value


def get_opt_int(data: Mapping[str, object], key: str) -> int | None:
    return None if data[key] is None else get_int(data, key)


def get_bool(data: Mapping[str, object], key: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected a boolean, got {value!r}")
    return value


def get_opt_bool(data: Mapping[str, object], key: str) -> bool | None:
    return None if data[key] is None else get_bool(data, key)


def get_opt_float(data: Mapping[str, object], key: str) -> float | None:
    value = data[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    return float(value)


def format_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds, so that equal instants always serialize to the same bytes."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def get_time(data: Mapping[str, object], key: str) -> datetime:
    text = get_str(data, key)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{key}: not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{key}: time without a UTC offset: {text!r}")
    return moment.astimezone(UTC)


def get_opt_time(data: Mapping[str, object], key: str) -> datetime | None:
    return None if data[key] is None else get_time(data, key)
