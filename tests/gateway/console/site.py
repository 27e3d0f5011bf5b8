"""A gateway with the console, two tenants with keys, a budget and billed requests in both tiers: what the
console tests (HTTP and browser) look at. Served for real, over simulated engines."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from gateway import create_app
from tests.chat import MESSAGES
from tests.conftest import gateway_settings, wait_ready
from tests.servers import serving

ADMIN = "console-admin-token-0123456789"
DELIBERATION = {"efforts": {"medium": {"floor": 20, "samples": 3, "max_extensions": 2}}}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Tenant:
    id: str
    key: str  # the full secret
    key_id: str
    request_ids: list[str] = field(default_factory=list)


@dataclass
class Site:
    url: str
    database_url: str
    tenants: dict[str, Tenant]

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN}"}
        return httpx.request(method, f"{self.url}/admin{path}", headers=headers, timeout=30, **kwargs)


def _wait_for_rows(url: str, tenant: Tenant, timeout_s: float = 60.0) -> None:
    """The journal drains into the ledger on its own clock: wait, generously, for the tenant's rows."""
    deadline = time.monotonic() + timeout_s
    headers = {"authorization": f"Bearer {tenant.key}"}
    for rid in tenant.request_ids:
        while httpx.get(f"{url}/v1/generation", params={"id": rid}, headers=headers).status_code != 200:
            assert time.monotonic() < deadline, f"no ledger row for {rid} within {timeout_s} s"
            time.sleep(0.05)


@contextmanager
def console_site(fast_engine: str, deliberate_engine: str, database_url: str | None = None) -> Iterator[Site]:
    if database_url is None:
        database_url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='tiergate-console-')) / 'console.sqlite3'}"
    settings = gateway_settings(
        [fast_engine],
        [deliberate_engine],
        auth={"mode": "keys", "admin_tokens": [ADMIN], "cache_ttl_s": 0.3},
        database={"url": database_url},
        deliberation=DELIBERATION,
        # threshold 1: every cascade escalates; its row shows the fast stage's confidence and the escalation
        model_settings={"qwen3-8b": {"cascade": {"threshold": 1.0, "samples": 2}}},
        # the gateway probes itself once, at start: the operator's page shows each tier's quality
        probes={"enabled": True, "tasks": 2, "models": ["qwen3-8b"], "interval_s": 3600},
        console={"sign_in_per_minute": 10_000},  # every test signs in from 127.0.0.1
    )
    with serving(create_app(settings)) as url:
        wait_ready(url)
        site = Site(url, database_url, {})
        for tenant_id in ("acme", "globex"):
            assert site.admin(
                "POST", "/tenants", json={"id": tenant_id, "name": tenant_id.title()}
            ).is_success
            made = site.admin(
                "POST",
                "/keys",
                json={
                    "tenant": tenant_id,
                    "name": "main",
                    "tiers": ["fast", "deliberate", "cascade"],
                    "limits": {"fast": {"rpm": 600}},
                },
            )
            assert made.status_code == 201, made.text
            site.tenants[tenant_id] = Tenant(tenant_id, made.json()["secret"], made.json()["id"])
        put = site.admin("PUT", "/tenants/acme/budgets/monthly", json={"limit": "5.00"})
        assert put.is_success, put.text
        for tenant in site.tenants.values():
            with openai.OpenAI(base_url=url + "/v1", api_key=tenant.key, max_retries=0) as client:
                fast = client.chat.completions.with_raw_response.create(
                    model="qwen3-8b:fast", messages=MESSAGES
                )
                deliberate = client.chat.completions.with_raw_response.create(
                    model="qwen3-8b:deliberate", messages=MESSAGES, reasoning_effort="medium"
                )
                cascade = client.chat.completions.with_raw_response.create(
                    model="qwen3-8b:cascade", messages=MESSAGES, reasoning_effort="medium"
                )
                for raw in (fast, deliberate, cascade):
                    tenant.request_ids.append(raw.headers["x-tiergate-request-id"])
        for tenant in site.tenants.values():
            _wait_for_rows(url, tenant)
        yield site


class Browser:
    """A console visitor without a browser: httpx with its own cookie jar, reading CSRF tokens from forms."""

    def __init__(self, site: Site, **options: Any) -> None:
        self.site = site
        self.client = httpx.Client(base_url=site.url, timeout=60, follow_redirects=False, **options)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def csrf(self, path: str = "/console/sign-in") -> str:
        found = CSRF.search(self.get(path).text)
        assert found is not None, f"no CSRF token on {path}"
        return found.group(1)

    def post(
        self, path: str, data: dict[str, Any] | None = None, *, token_from: str | None = None
    ) -> httpx.Response:
        body = dict(data or {})
        if token_from is not None:
            body["csrf"] = self.csrf(token_from)
        return self.client.post(path, data=body)

    def sign_in(self, credential: str) -> httpx.Response:
        response = self.post("/console/sign-in", {"credential": credential}, token_from="/console/sign-in")
        assert response.status_code == 303, response.text
        return response

    def close(self) -> None:
        self.client.close()
