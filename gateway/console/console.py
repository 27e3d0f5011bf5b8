"""The console as the lifespan builds it: its signer, its templates, its stylesheet, the admin tokens'
fingerprints. None of it changes while the gateway runs."""

from __future__ import annotations

import hmac
from importlib.resources import files

from jinja2 import Environment, PackageLoader, StrictUndefined

from gateway.console.secret import console_secret
from gateway.console.session import SessionSigner
from gateway.database import Database
from gateway.limits import Quota
from gateway.settings import Settings

__all__ = ["Console"]


class Console:
    def __init__(self, settings: Settings, signer: SessionSigner) -> None:
        self.ttl_s = settings.console.session_ttl_s
        self.sign_in_quota = Quota(rpm=settings.console.sign_in_per_minute)
        self.signer = signer
        # autoescape everywhere: tenant names, key names and model answers are text from outside
        self.templates = Environment(
            loader=PackageLoader("gateway.console", "templates"), autoescape=True, undefined=StrictUndefined
        )
        self.stylesheet = files("gateway.console").joinpath("static/console.css").read_bytes()
        self._admin_tokens = [token.get_secret_value() for token in settings.auth.admin_tokens]
        self._fingerprints = frozenset(signer.fingerprint(token) for token in self._admin_tokens)

    @classmethod
    async def open(cls, settings: Settings, database: Database | None) -> Console | None:
        """The console, or None when it is off or has no secret to sign with (no database, no setting)."""
        if not settings.console.enabled:
            return None
        secret = await console_secret(settings.console, database)
        return None if secret is None else cls(settings, SessionSigner(secret))

    def admin(self, presented: str) -> str | None:
        """The fingerprint of the admin token presented, if it is one; every token is compared, always, so
        the time taken tells nothing of which one nearly matched."""
        found = None
        for token in self._admin_tokens:
            if hmac.compare_digest(presented.encode(), token.encode()):
                found = token
        return None if found is None else self.signer.fingerprint(found)

    def admin_current(self, fingerprint: str | None) -> bool:
        return fingerprint is not None and fingerprint in self._fingerprints
