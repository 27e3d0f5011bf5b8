"""Client connections and the file descriptors they take."""

from __future__ import annotations

import resource

__all__ = ["raise_open_file_limit"]


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft limit of open files to its hard limit, and return (before, after).

    Every connection, from a client or to an engine, holds a descriptor, and the soft limit is often 1,024: a
    thousand streams would exhaust it. uvicorn's worker processes inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # a hard limit the kernel will not grant as a soft one (unlimited, say)
        return soft, soft
    return soft, hard
