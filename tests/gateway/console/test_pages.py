"""What the console's pages show, against the ledger and the pools, in SQLite and in PostgreSQL (the day of a
request is computed in SQL, differently in each)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx

from pricing import format_micros
from tests.conftest import StartGateway
from tests.gateway.console.site import ADMIN, Browser, Site, console_site


def cost_micros(site: Site, tenant: str) -> int:
    key = site.tenants[tenant].key
    total = 0
    for rid in site.tenants[tenant].request_ids:
        got = httpx.get(
            f"{site.url}/v1/generation", params={"id": rid}, headers={"authorization": f"Bearer {key}"}
        )
        total += got.json()["data"]["cost_micros"]
    return total


def fast_pool(browser: Browser) -> str:
    return browser.get("/console/operator/pools").text


def cells(html: str) -> list[str]:
    return [
        re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", html, re.S)
    ]


def test_the_pages_show_the_ledgers_figures(
    fast_engine: str, deliberate_engine: str, database_url: str
) -> None:
    with console_site(fast_engine, deliberate_engine, database_url) as site:
        acme_total, globex_total = cost_micros(site, "acme"), cost_micros(site, "globex")
        assert acme_total > 0 and globex_total > 0
        tenant = Browser(site)
        operator = Browser(site)
        try:
            tenant.sign_in(site.tenants["acme"].key)
            today = datetime.now(UTC).strftime("%Y-%m-%d")
            spend = cells(tenant.get("/console/spend").text)
            row = spend.index(today)  # the day's row: its tiers (fast, deliberate, cascade), then its total
            width = spend.index("Total") - spend.index("Day") + 1
            assert spend[row + width - 1] == format_micros(acme_total)
            # the monthly budget: limit 5.00, spent what the ledger says, the rest left
            assert format_micros(5_000_000 - acme_total) in spend
            invoice = tenant.get("/console/invoice").text
            assert f'id="invoice-total">{format_micros(acme_total)}<' in invoice
            requests = tenant.get("/console/requests").text
            for rid in site.tenants["acme"].request_ids:
                assert rid in requests
            assert "floor 20: met" in requests  # the deliberate request's floor, met
            # the cascade request: escalated (threshold 1), its fast answer's confidence shown against it
            assert re.search(r"yes \(confidence (\d\.\d\d|none) / 1\.00\)", requests)

            operator.sign_in(ADMIN)
            overview = operator.get("/console/operator").text
            top = cells(overview[: overview.index("</table>")])  # the top spenders' table, first on the page
            rows = {top[i]: top[i + 2] for i in range(3, len(top), 3)}
            assert rows["acme"] == f"{format_micros(acme_total)} USD"
            assert rows["globex"] == f"{format_micros(globex_total)} USD"
            spent = [rows[tenant] for tenant in rows]
            assert spent == sorted(spent, key=lambda amount: Decimal(amount.split()[0]), reverse=True)
            # the fast pool's speculative decoding, from the simulator's metrics once the pool scraped them
            deadline = time.monotonic() + 60
            while not re.search(r"Pool fast</h2>\s*<p>[^<]*acceptance:\s+\d+\.\d%", fast_pool(operator)):
                assert time.monotonic() < deadline, "the fast pool's acceptance never showed"
                time.sleep(0.2)
        finally:
            tenant.close()
            operator.close()


def test_a_console_turned_off_is_not_there(
    fast_engine: str, start_gateway: StartGateway, tmp_path: Path
) -> None:
    gateway = start_gateway(
        [fast_engine],
        [fast_engine],
        auth={"mode": "keys", "admin_tokens": [ADMIN]},
        database={"url": f"sqlite:///{tmp_path / 'off.sqlite3'}"},
        console={"enabled": False},
    )
    for path in ("/console", "/console/sign-in", "/console/keys"):
        response = httpx.get(gateway.url + path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "console_disabled"


def test_sign_in_attempts_from_one_address_are_limited(
    fast_engine: str, start_gateway: StartGateway, tmp_path: Path
) -> None:
    gateway = start_gateway(
        [fast_engine],
        [fast_engine],
        auth={"mode": "keys", "admin_tokens": [ADMIN]},
        database={"url": f"sqlite:///{tmp_path / 'limited.sqlite3'}"},
        console={"sign_in_per_minute": 3},
    )
    site = Site(gateway.url, "", {})
    guesser = Browser(site)
    try:
        for _ in range(3):
            wrong = guesser.post("/console/sign-in", {"credential": "x" * 20}, token_from="/console/sign-in")
            assert wrong.status_code == 401
        refused = guesser.post("/console/sign-in", {"credential": ADMIN}, token_from="/console/sign-in")
        assert refused.status_code == 429  # even the right token, until the minute has passed
        assert int(refused.headers["retry-after"]) >= 1
        assert "Too many sign-in attempts" in refused.text
        assert guesser.get("/console/operator").status_code == 303
    finally:
        guesser.close()
