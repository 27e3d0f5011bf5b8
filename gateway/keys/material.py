"""Key material: `tg-<id>-<secret>`, made, parsed and checked here and nowhere else.

The id (12 lowercase base32 characters, 60 bits) is public: it names the key in logs, the admin API and
the database. The secret is 32 random bytes, urlsafe base64 without padding (43 characters, which may
include `-`). Only SHA-256 of the secret is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

__all__ = ["IssuedKey", "hash_secret", "new_key", "new_key_id", "parse_key", "secret_matches"]

PREFIX = "tg"
_ID = re.compile(r"[a-z2-7]{12}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")


class IssuedKey(str):
    """A full key as issued, once, at creation. It is a plain `str` to whoever prints or sends it,
    but its repr is masked: a key in a traceback, an assertion message or a `%r` log stays hidden."""

    __slots__ = ()

    def __repr__(self) -> str:
        parsed = parse_key(self)
        return repr(f"{PREFIX}-{parsed[0]}-****" if parsed else f"{PREFIX}-****")


def new_key_id() -> str:
    # 8 random bytes make 13 base32 characters; the first 12 carry 60 bits
    return base64.b32encode(secrets.token_bytes(8)).decode("ascii")[:12].lower()


def new_key(key_id: str) -> tuple[IssuedKey, bytes]:
    """A fresh key with the given id, and the hash to store for it."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    return IssuedKey(f"{PREFIX}-{key_id}-{secret}"), hash_secret(secret)


def parse_key(presented: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, None for anything else."""
    parts = presented.split("-", 2)  # the id has no dash; the secret may
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    _, key_id, secret = parts
    if _ID.fullmatch(key_id) is None or _SECRET.fullmatch(secret) is None:
        return None
    return key_id, secret


def hash_secret(secret: str) -> bytes:
    # a plain SHA-256 is enough: the secret has 256 bits of entropy, so there is no dictionary to try
    # and a slow hash (bcrypt, argon2) would only make every cache miss slower
    return hashlib.sha256(secret.encode("ascii")).digest()


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    # constant time: how long the comparison takes must not tell how much of the hash matched
    return hmac.compare_digest(hash_secret(secret), stored_hash)
