"""Errors raised by the key store and the authenticator.

    KeyStoreError            base
    ├── KeyStoreConflict     the tenant exists already
    └── KeyStoreNotFound     no such tenant or key
    AuthError                a presented key was refused; `reason` says why, the message never holds the key

Invalid input (a bad tenant id, no tiers, a naive datetime) is a plain ValueError. Database failures
surface as `gateway.database.DatabaseError`: the store does not hide an outage behind a key error.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["AuthError", "AuthFailure", "KeyStoreConflict", "KeyStoreError", "KeyStoreNotFound"]

AuthFailure = Literal["missing", "malformed", "unknown", "revoked", "expired"]

_MESSAGES: dict[AuthFailure, str] = {
    "missing": "no API key was presented",
    "malformed": "the API key is not of the form tg-<id>-<secret>",
    "unknown": "the API key is not known",  # also a wrong secret: never say which half was wrong
    "revoked": "the API key is revoked",
    "expired": "the API key has expired",
}


class KeyStoreError(Exception):
    pass


class KeyStoreConflict(KeyStoreError):
    pass


class KeyStoreNotFound(KeyStoreError):
    pass


class AuthError(Exception):
    """`key_id` is set once the secret was verified (revoked, expired): the id is public, for logs."""

    def __init__(self, reason: AuthFailure, *, key_id: str | None = None) -> None:
        super().__init__(_MESSAGES[reason])
        self.reason: AuthFailure = reason
        self.key_id = key_id
