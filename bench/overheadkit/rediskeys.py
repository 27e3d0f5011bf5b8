"""A benchmark's own keys in a Redis that others may share: count them, delete them, find the server.

Nothing here touches a key outside the given prefix: keys are found with SCAN MATCH <prefix>* (never KEYS,
never FLUSHDB/FLUSHALL) and deleted by name, so tests or other runs using the same Redis are unaffected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

_GLOB_SPECIALS = "\\*?[]"
_DELETE_BATCH = 500


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)


def _pattern(prefix: str) -> str:
    """SCAN MATCH pattern for every key starting with prefix, glob characters in the prefix escaped."""
    escaped = "".join("\\" + ch if ch in _GLOB_SPECIALS else ch for ch in prefix)
    return escaped + "*"


def _keys(client: redis.Redis, prefix: str) -> list[Any]:
    return list(client.scan_iter(match=_pattern(prefix), count=1000))


def count(url: str, prefix: str) -> int:
    """How many keys start with prefix (raises redis.RedisError when Redis cannot be reached)."""
    with _client(url) as client:
        return len(_keys(client, prefix))


def delete(url: str, prefix: str) -> int:
    """Delete every key that starts with prefix, and only those; returns how many were deleted."""
    deleted = 0
    with _client(url) as client:
        keys = _keys(client, prefix)
        for start in range(0, len(keys), _DELETE_BATCH):
            deleted += int(client.delete(*keys[start : start + _DELETE_BATCH]))
    return deleted


def server(url: str) -> tuple[str, int | None]:
    """Redis's version, and its pid when that process is visible here (same machine and pid namespace).

    With the pid, the benchmark can count the CPU Redis spends on the gateway's calls as part of the
    configuration under test rather than as foreign load.
    """
    with _client(url) as client:
        info: dict[str, Any] = client.info("server")
    version = str(info.get("redis_version", "unknown"))
    pid = info.get("process_id")
    if not isinstance(pid, int):
        return version, None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return version, None
    return version, pid if comm.startswith("redis-server") else None
