"""Tenants and their API keys: stored by `KeyStore`, checked on each request by `Authenticator`.

Keys look like `tg-<id>-<secret>`; only a hash of the secret is stored, and the full key is shown once,
when it is created.
"""

from gateway.keys._exceptions import AuthError, AuthFailure, KeyStoreConflict, KeyStoreError, KeyStoreNotFound
from gateway.keys.authenticator import Authenticator
from gateway.keys.material import IssuedKey
from gateway.keys.records import ApiKey, Tenant
from gateway.keys.store import UNCHANGED, KeyStore, Unchanged

__all__ = [
    "UNCHANGED",
    "ApiKey",
    "AuthError",
    "AuthFailure",
    "Authenticator",
    "IssuedKey",
    "KeyStore",
    "KeyStoreConflict",
    "KeyStoreError",
    "KeyStoreNotFound",
    "Tenant",
    "Unchanged",
]
