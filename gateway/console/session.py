"""The console's sessions: an HMAC-signed cookie (no server-side table, so any worker or replica reads it)
that names who signed in - never the key or token itself - and the CSRF tokens tied to it.

A cookie is `payload.signature`, both base64url: the payload is JSON {"role", "tenant", "key", "admin",
"nonce", "expires"}; the signature HMAC-SHA256 over the payload with the console's secret. Every visitor
has one (an anonymous one before signing in), so the sign-in form carries a CSRF token as every other form
does; signing in issues a fresh nonce (no fixation of a session made before it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Literal

import orjson

__all__ = ["COOKIE", "Role", "Session", "SessionSigner"]

COOKIE = "tiergate_console"
Role = Literal["anonymous", "tenant", "operator"]


@dataclass(frozen=True, slots=True)
class Session:
    role: Role
    nonce: str  # random; what the CSRF token is derived from
    expires: float  # epoch seconds
    tenant: str | None = None
    key: str | None = None  # the id of the API key a tenant signed in with (its secret is never kept)
    admin: str | None = None  # a fingerprint of the admin token an operator signed in with

    @classmethod
    def anonymous(cls, ttl_s: float) -> Session:
        return cls("anonymous", secrets.token_urlsafe(16), time.time() + ttl_s)

    def signed_in(
        self,
        role: Role,
        ttl_s: float,
        *,
        tenant: str | None = None,
        key: str | None = None,
        admin: str | None = None,
    ) -> Session:
        """A new session for whoever signed in: fresh nonce, fresh expiry."""
        return Session(role, secrets.token_urlsafe(16), time.time() + ttl_s, tenant, key, admin)


class SessionSigner:
    """Signs and reads session cookies, makes and checks CSRF tokens, all with one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the console's secret needs at least 32 bytes")
        self._secret = secret

    def _mac(self, purpose: bytes, message: bytes) -> bytes:
        return hmac.new(self._secret, purpose + b"\0" + message, hashlib.sha256).digest()

    def dump(self, session: Session) -> str:
        payload = _b64(orjson.dumps(asdict(session)))
        return f"{payload}.{_b64(self._mac(b'session', payload.encode()))}"

    def load(self, cookie: str | None) -> Session | None:
        """The cookie's session when its signature holds and it has not expired; else None."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        try:
            expected = _b64(self._mac(b"session", payload.encode()))
            if not hmac.compare_digest(signature.encode(), expected.encode()):
                return None
            session = Session(**orjson.loads(_unb64(payload)))
        except (ValueError, TypeError, orjson.JSONDecodeError):
            return None
        return session if session.expires > time.time() else None

    def csrf(self, session: Session) -> str:
        return _b64(self._mac(b"csrf", session.nonce.encode()))

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf(session).encode())

    def fingerprint(self, admin_token: str) -> str:
        """Names an admin token without revealing it: a session ends when its token leaves the settings."""
        return _b64(self._mac(b"admin", admin_token.encode()))[:22]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
