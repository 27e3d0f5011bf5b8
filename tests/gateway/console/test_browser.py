"""The console in a real browser: headless Chromium from Debian's packages, driven by Playwright's Python
package (never `playwright install`: no browser is downloaded). Signs in with the keyboard alone, visits every
page at a desktop's width and a phone's, checks that no page scrolls sideways on the phone, and saves a
screenshot of every page to .artifacts/console/. Without Chromium the tests are skipped, loudly; with
TIERGATE_REQUIRE_BROWSER=1 that is a failure."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.gateway.console.site import ADMIN, Site

ROOT = Path(__file__).parents[3]
SHOTS = ROOT / ".artifacts" / "console"
REQUIRE_ENV = "TIERGATE_REQUIRE_BROWSER"
BROWSER_ENV = "TIERGATE_CHROMIUM"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
TENANT_PAGES = {
    "keys": "/console/keys",
    "spend": "/console/spend",
    "invoice": "/console/invoice",
    "requests": "/console/requests",
    "playground": "/console/playground",
}
OPERATOR_PAGES = {"tenants": "/console/operator", "pools": "/console/operator/pools"}


def chromium() -> str:
    explicit = os.environ.get(BROWSER_ENV)
    for candidate in [explicit] if explicit else ["/usr/bin/chromium", shutil.which("chromium")]:
        if candidate and Path(candidate).is_file():
            return candidate
    message = (
        "CHROMIUM IS NOT INSTALLED, so the console is NOT TESTED IN A BROWSER. Install Debian's "
        f"(`apt-get install -y chromium`) or point {BROWSER_ENV} at one; set {REQUIRE_ENV}=1 to make this"
        " a failure."
    )
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Browser]:
    # after the site: Playwright's sync API runs an event loop in this thread for as long as it is open
    path = chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path)
        yield launched
        launched.close()


@pytest.fixture(params=sorted(WIDTHS))
def page(request: pytest.FixtureRequest, browser: Browser) -> Iterator[Page]:
    width, height = WIDTHS[request.param]
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    context.set_default_timeout(60_000)
    yield context.new_page()
    context.close()


def width_name(page: Page) -> str:
    size = page.viewport_size
    assert size is not None
    return next(name for name, (width, _) in WIDTHS.items() if width == size["width"])


def shoot(page: Page, name: str) -> Path:
    """A full-page screenshot, after checking the page does not scroll sideways (it fits a phone)."""
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{page.url} scrolls sideways at {inner} px: {scroll} px wide"
    path = SHOTS / f"{name}-{width_name(page)}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path


def tab_to(page: Page, element_id: str, presses: int = 30) -> None:
    """Tab through the page until the element has the focus, as someone with only a keyboard would."""
    for _ in range(presses):
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} never got the focus by Tab on {page.url}")


def request_rows(page: Page, site: Site) -> int:
    page.goto(site.url + "/console/requests")
    return page.locator("table.requests tbody tr").count()


def sign_in_by_keyboard(page: Page, site: Site, credential: str) -> None:
    page.goto(site.url + "/console")
    assert page.url.endswith("/console/sign-in")
    page.evaluate("document.activeElement && document.activeElement.blur()")  # start from nothing focused
    tab_to(page, "credential")
    page.keyboard.type(credential)
    with page.expect_navigation():
        page.keyboard.press("Enter")


def test_a_tenant_uses_every_page_by_keyboard_at_every_width(page: Page, site: Site) -> None:
    acme, globex = site.tenants["acme"], site.tenants["globex"]
    page.goto(site.url + "/console/sign-in")
    shoot(page, "sign-in")
    sign_in_by_keyboard(page, site, acme.key)
    assert page.url.endswith("/console/keys")
    assert page.locator("h1").inner_text() == "API keys"
    for name, path in TENANT_PAGES.items():
        page.goto(site.url + path)
        text = page.locator("main").inner_text()
        assert "globex" not in text and globex.key_id not in text, name
        shoot(page, f"tenant-{name}")

    # the spend chart has a bar per tier spent in, and the requests page this tenant's requests
    page.goto(site.url + "/console/spend")
    assert page.locator(".chart svg rect[fill]").count() >= 2
    page.goto(site.url + "/console/requests")
    for rid in acme.request_ids:
        assert page.get_by_text(rid).count() == 1

    # a key made with the keyboard: Tab to the name, type, Enter submits the form
    page.goto(site.url + "/console/keys")
    tab_to(page, "key-name")
    page.keyboard.type(f"made-by-keyboard-{width_name(page)}")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("tg-")
    shoot(page, "tenant-key-created")

    # the invoice as CSV, downloaded
    page.goto(site.url + "/console/invoice")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download").click()
    saved = Path(download.value.path())
    rows = saved.read_text(encoding="utf-8").strip().splitlines()
    assert rows[0].startswith("tenant,period,tier,model")
    assert {row.split(",")[0] for row in rows[1:]} == {"acme"}

    # the playground: each tier answers (the cascade escalates, threshold 1), each with its cost, billed to
    # the tenant like any other request
    before = request_rows(page, site)
    page.goto(site.url + "/console/playground")
    page.locator("#model").select_option("qwen3-8b")
    page.locator("#prompt").fill("What is 2 + 3?")
    page.locator("#key").fill(acme.key)
    with page.expect_navigation():
        page.get_by_role("button", name="Send to each tier").click()
    answers = page.locator(".answer")
    assert answers.count() == 3
    assert page.locator(".answer .error").count() == 0
    assert page.locator("#answer-fast").count() == 1 and page.locator("#answer-deliberate").count() == 1
    cascade = page.locator("section.answer", has=page.locator("#answer-cascade")).inner_text()
    assert "Escalated" in cascade and "yes (confidence" in cascade
    shoot(page, "tenant-playground-answers")
    deadline = time.monotonic() + 60  # the ledger fills from the journal on its own clock
    while request_rows(page, site) < before + 3:
        assert time.monotonic() < deadline, "the playground's requests never reached the ledger"
        time.sleep(0.2)

    # sign out with the keyboard: the pages are closed again
    tab_to(page, "sign-out")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.goto(site.url + "/console/keys")
    assert page.url.endswith("/console/sign-in")


def test_an_operator_sees_tenants_pools_and_probes_at_every_width(page: Page, site: Site) -> None:
    sign_in_by_keyboard(page, site, ADMIN)
    assert page.url.endswith("/console/operator")
    for name, path in OPERATOR_PAGES.items():
        page.goto(site.url + path)
        shoot(page, f"operator-{name}")
    page.goto(site.url + "/console/operator")
    text = page.locator("main").inner_text()
    assert "acme" in text and "globex" in text
    page.goto(site.url + "/console/operator/pools")
    assert page.locator(".health.healthy").count() == 2
    # the probes' results per tier, once their first run is over (they run as the gateway starts)
    deadline = time.monotonic() + 60
    while page.locator("#probes tbody tr").count() < 2:
        assert time.monotonic() < deadline, "no probe results for both tiers"
        time.sleep(0.5)
        page.goto(site.url + "/console/operator/pools")
    probes = page.locator("#probes").inner_text()
    assert "fast" in probes and "deliberate" in probes and "%" in probes
    shoot(page, "operator-pools-probed")


def test_a_post_without_its_token_is_refused_in_the_browser_too(page: Page, site: Site) -> None:
    sign_in_by_keyboard(page, site, site.tenants["acme"].key)
    page.goto(site.url + "/console/keys")
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(field => field.value = 'forged')")
    page.locator("#key-name").fill("forged")
    with page.expect_navigation():
        page.get_by_role("button", name="Create key").click()
    assert page.locator("h1").inner_text() == "Form expired"
    shoot(page, "csrf-refused")
