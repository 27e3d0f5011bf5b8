"""Session cookies and CSRF tokens: what a signature protects, and what it does not accept."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from gateway.console.session import Session, SessionSigner

SECRET = b"s" * 32


def test_a_session_survives_its_cookie() -> None:
    signer = SessionSigner(SECRET)
    session = Session.anonymous(60).signed_in("tenant", 60, tenant="acme", key="abc")
    assert signer.load(signer.dump(session)) == session
    assert session.nonce != Session.anonymous(60).nonce


def test_a_tampered_forged_or_expired_cookie_is_no_session() -> None:
    signer = SessionSigner(SECRET)
    session = Session.anonymous(60).signed_in("tenant", 60, tenant="acme", key="abc")
    payload, signature = signer.dump(session).split(".")
    assert signer.load(f"{payload}x.{signature}") is None  # a payload changed after signing
    forged = replace(session, tenant="globex")
    forged_payload = signer.dump(forged).split(".")[0]
    assert signer.load(f"{forged_payload}.{signature}") is None  # another payload under acme's signature
    assert SessionSigner(b"t" * 32).load(signer.dump(session)) is None  # another secret's cookie
    assert signer.load(signer.dump(replace(session, expires=time.time() - 1))) is None
    for junk in (None, "", "a", "a.b.c", "!!!.???", f"{payload}."):
        assert signer.load(junk) is None


def test_csrf_tokens_belong_to_one_session() -> None:
    signer = SessionSigner(SECRET)
    one, two = Session.anonymous(60), Session.anonymous(60)
    assert signer.csrf_ok(one, signer.csrf(one))
    assert not signer.csrf_ok(two, signer.csrf(one))
    assert not signer.csrf_ok(one, None)
    assert not signer.csrf_ok(one, "")


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SessionSigner(b"short")


def test_a_short_configured_secret_stops_the_start() -> None:
    from gateway.settings import ConfigError
    from tests.conftest import gateway_settings

    with pytest.raises(ConfigError, match="session_secret needs at least 32 characters"):
        gateway_settings(["http://127.0.0.1:1"], ["http://127.0.0.1:1"], console={"session_secret": "short"})
