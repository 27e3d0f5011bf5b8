"""The affinity key of a request: what makes the pool send requests that share a prompt prefix to the same
replica, whose prefix cache then serves them (engines/routing.py, docs/routing.md).

In order: the request's `prompt_cache_key` (OpenAI's field for exactly this), else its `user`, else a hash of
the prompt's first `PREFIX_CHARS` characters. Chat: the system and developer messages' text, then the first
other message's, which ends the prefix, so that a conversation keeps its key as it grows. Completions: the
prompt's start. Runs on the hot path, so it reads a bounded prefix. CRC-32, not `hash()`: the key must
be the same in every gateway worker and instance, so that all of them send a prefix to the same replica.
"""

from __future__ import annotations

from typing import Any
from zlib import crc32 as _crc32

__all__ = ["PREFIX_CHARS", "affinity_key"]

PREFIX_CHARS = 1024
_LEADING_ROLES = frozenset(("system", "developer"))


def affinity_key(data: dict[str, Any], *, chat: bool) -> str | None:
    """The key of a request body (`chat`: /v1/chat/completions, else /v1/completions); None when it has
    neither key fields nor prompt text."""
    key = data.get("prompt_cache_key")
    if isinstance(key, str) and key:
        return "k:" + key
    user = data.get("user")
    if isinstance(user, str) and user:
        return "u:" + user
    crc = _chat_prefix(data.get("messages")) if chat else _prompt_prefix(data.get("prompt"))
    return None if crc is None else "p:" + str(crc)


def _chat_prefix(messages: Any) -> int | None:
    if not isinstance(messages, list):
        return None
    crc = 0
    left = PREFIX_CHARS
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            if content:
                piece = content[:left]
                crc = _crc32(piece.encode("utf-8", "surrogatepass"), crc)
                left -= len(piece)
                if left <= 0:
                    return crc
        elif isinstance(content, list):  # content parts: only the text ones
            for part in content:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str) and text:
                    piece = text[:left]
                    crc = _crc32(piece.encode("utf-8", "surrogatepass"), crc)
                    left -= len(piece)
                    if left <= 0:
                        return crc
        if message.get("role") not in _LEADING_ROLES:
            break  # the first user turn ends the prefix: a conversation keeps its key as it grows
    return crc if left < PREFIX_CHARS else None


def _prompt_prefix(prompt: Any) -> int | None:
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]  # a batch of prompts: the first one's prefix
    if isinstance(prompt, str):
        return _crc32(prompt[:PREFIX_CHARS].encode("utf-8", "surrogatepass")) if prompt else None
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        return _crc32(repr(prompt[:256]).encode())  # token ids: 256 of them, about 1 KB of text
    return None
