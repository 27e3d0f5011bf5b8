"""Chat messages for tests: one user turn, the way every test writes it."""

from __future__ import annotations

from typing import Any

__all__ = ["MESSAGES", "user"]


def user(text: str) -> Any:
    """A conversation of one user message (typed loosely: the SDK's overloads and httpx's JSON take it)."""
    return [{"role": "user", "content": text}]


MESSAGES: Any = user("hi")  # when what is asked does not matter
