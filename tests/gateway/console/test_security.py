"""The console's security, over HTTP: CSRF on every form, the session cookie's attributes, no key in a URL
or a cookie, and a tenant never sees or touches another tenant's data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.console.site import ADMIN, Browser, Site


@pytest.fixture
def browsers(site: Site) -> Iterator[list[Browser]]:
    made: list[Browser] = []
    yield made
    for browser in made:
        browser.close()


def visitor(site: Site, browsers: list[Browser], **options: object) -> Browser:
    browsers.append(Browser(site, **options))
    return browsers[-1]


FORMS = [
    "/console/sign-in",
    "/console/sign-out",
    "/console/keys",
    "/console/keys/{key}/revoke",
    "/console/keys/{key}/limits",
    "/console/playground",
]


@pytest.mark.parametrize("path", FORMS)
def test_every_form_refuses_a_post_without_its_csrf_token_or_with_a_wrong_one(
    site: Site, browsers: list[Browser], path: str
) -> None:
    acme = site.tenants["acme"]
    browser = visitor(site, browsers)
    if path != "/console/sign-in":
        browser.sign_in(acme.key)
    target = path.format(key=acme.key_id)
    fields = {"credential": acme.key, "name": "x", "tiers": "fast", "rpm_fast": "1", "prompt": "hi"}
    assert browser.post(target, fields).status_code == 403
    assert browser.post(target, {**fields, "csrf": "forged"}).status_code == 403
    other = visitor(site, browsers)  # a token from another visitor's session is no good either
    assert browser.post(target, {**fields, "csrf": other.csrf()}).status_code == 403
    # nothing happened: still signed in, the key still active
    if path != "/console/sign-in":
        assert browser.get("/console/keys").status_code == 200
        keys = site.admin("GET", "/keys", params={"tenant": "acme"}).json()["data"]
        assert not next(key for key in keys if key["id"] == acme.key_id)["revoked"]


def test_the_session_cookie_is_httponly_samesite_strict_and_holds_no_key(
    site: Site, browsers: list[Browser]
) -> None:
    acme = site.tenants["acme"]
    browser = visitor(site, browsers)
    response = browser.sign_in(acme.key)
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/console" in attributes
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back
    secret = acme.key.rsplit("-", 1)[-1]
    assert secret not in cookie and acme.key not in cookie
    page = browser.get("/console/keys")
    assert acme.key not in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_the_cookie_is_secure_behind_tls(site: Site, browsers: list[Browser]) -> None:
    # uvicorn takes X-Forwarded-Proto from its trusted proxies (127.0.0.1 by default): the test's own address
    browser = visitor(site, browsers, headers={"x-forwarded-proto": "https"})
    response = browser.get("/console/sign-in")
    assert "secure" in {part.strip().lower() for part in response.headers["set-cookie"].split(";")}


def test_a_key_in_the_url_signs_no_one_in(site: Site, browsers: list[Browser]) -> None:
    browser = visitor(site, browsers)
    acme = site.tenants["acme"]
    browser.get("/console/sign-in", params={"credential": acme.key})
    assert browser.get("/console/keys").headers["location"] == "/console/sign-in"
    # nor does a GET to the form's target
    assert browser.get("/console/sign-in", params={"credential": ADMIN}).status_code == 200
    assert browser.get("/console/operator").status_code == 303


def test_wrong_credentials_are_refused_and_roles_are_kept_apart(site: Site, browsers: list[Browser]) -> None:
    browser = visitor(site, browsers)
    for wrong in ("tg-nope-nope", "not-the-admin-token-at-all", ""):
        response = browser.post("/console/sign-in", {"credential": wrong}, token_from="/console/sign-in")
        assert response.status_code == 401
    assert browser.get("/console/keys").status_code == 303
    browser.sign_in(site.tenants["acme"].key)
    assert browser.get("/console/operator").status_code == 403
    assert browser.get("/console/operator/pools").status_code == 403
    operator = visitor(site, browsers)
    assert operator.sign_in(ADMIN).headers["location"] == "/console/operator"
    assert operator.get("/console/keys").status_code == 403
    page = operator.get("/console/operator")
    assert "acme" in page.text and "globex" in page.text


def test_a_tenant_never_sees_another_tenants_data(site: Site, browsers: list[Browser]) -> None:
    acme, globex = site.tenants["acme"], site.tenants["globex"]
    browser = visitor(site, browsers)
    browser.sign_in(acme.key)
    pages = {
        path: browser.get(path).text
        for path in ("/console/keys", "/console/spend", "/console/invoice", "/console/requests")
    }
    for rid in acme.request_ids:
        assert rid in pages["/console/requests"]
    for path, text in pages.items():
        assert globex.key_id not in text, path
        assert "globex" not in text, path
        for rid in globex.request_ids:
            assert rid not in text, path
    csv = browser.get("/console/invoice.csv")
    assert csv.status_code == 200
    assert csv.headers["content-type"].startswith("text/csv")
    rows = [line.split(",") for line in csv.text.strip().splitlines()]
    assert rows[0][0] == "tenant" and len(rows) > 2
    assert {row[0] for row in rows[1:]} == {"acme"}


def test_a_tenant_cannot_revoke_or_change_another_tenants_key(site: Site, browsers: list[Browser]) -> None:
    acme, globex = site.tenants["acme"], site.tenants["globex"]
    browser = visitor(site, browsers)
    browser.sign_in(acme.key)
    revoke = browser.post(f"/console/keys/{globex.key_id}/revoke", token_from="/console/keys")
    assert revoke.status_code == 404
    limits = browser.post(
        f"/console/keys/{globex.key_id}/limits", {"rpm_fast": "1"}, token_from="/console/keys"
    )
    assert limits.status_code == 404
    key = site.admin("GET", f"/keys/{globex.key_id}").json()
    assert not key["revoked"]
    assert key["limits"]["fast"]["rpm"] == 600


def test_keys_made_in_the_console_grant_no_more_than_the_key_signed_in_with(
    site: Site, browsers: list[Browser]
) -> None:
    acme = site.tenants["acme"]
    browser = visitor(site, browsers)
    browser.sign_in(acme.key)
    wider = browser.post(
        "/console/keys", {"name": "wide", "tiers": "fast", "rpm_fast": "601"}, token_from="/console/keys"
    )
    assert wider.status_code == 400
    assert "at most 600" in wider.text
    unlimited = browser.post("/console/keys", {"name": "wide", "tiers": "fast"}, token_from="/console/keys")
    assert unlimited.status_code == 400
    made = browser.post(
        "/console/keys", {"name": "ci", "tiers": "fast", "rpm_fast": "60"}, token_from="/console/keys"
    )
    assert made.status_code == 201
    assert "tg-" in made.text
    keys = site.admin("GET", "/keys", params={"tenant": "acme"}).json()["data"]
    ci = next(key for key in keys if key["name"] == "ci")
    assert ci["tiers"] == ["fast"] and ci["limits"] == {"fast": {"rpm": 60, "tpm": None}}
    revoked = browser.post(f"/console/keys/{ci['id']}/revoke", token_from="/console/keys")
    assert revoked.status_code == 303
    assert site.admin("GET", f"/keys/{ci['id']}").json()["revoked"]


def test_revoking_the_key_signed_in_with_ends_the_session(site: Site, browsers: list[Browser]) -> None:
    made = site.admin("POST", "/keys", json={"tenant": "acme", "name": "short", "tiers": ["fast"]}).json()
    browser = visitor(site, browsers)
    browser.sign_in(made["secret"])
    assert browser.get("/console/keys").status_code == 200
    assert site.admin("POST", f"/keys/{made['id']}/revoke").is_success
    assert browser.get("/console/keys").headers["location"] == "/console/sign-in"


def test_signing_out_ends_the_session(site: Site, browsers: list[Browser]) -> None:
    browser = visitor(site, browsers)
    browser.sign_in(ADMIN)
    assert browser.post("/console/sign-out", token_from="/console/operator").status_code == 200
    assert browser.get("/console/operator").status_code == 303
