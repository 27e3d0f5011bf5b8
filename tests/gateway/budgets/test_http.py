"""Budgets through HTTP and the OpenAI SDK: worst-case reservations under concurrency, settlement to the
real cost, the admin API, and spending read back from the ledger by a restarted gateway."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import httpx2
import openai
import pytest

from engines.simulator import profile
from gateway import create_app
from gateway.database import open_database
from pricing import Ledger, LedgerRow, format_micros, load_price_book, worst_case
from tests.chat import user
from tests.conftest import (
    PRICE_BOOK,
    Gateway,
    Recorder,
    StartEngine,
    StartGateway,
    gateway_settings,
    wait_ready,
)
from tests.gateway.keys.test_http import ADMIN, admin, keyed_gateway, new_key
from tests.prometheus import metric, scrape
from tests.servers import serving

MESSAGES = user("Tell me about budgets.")
MAX_TOKENS = (
    400  # more than the simulator ever writes (its answers are 16-200 tokens): real costs < reservations
)
BOOK = load_price_book(PRICE_BOOK)
T = TypeVar("T")


@pytest.fixture(params=["in-process", "redis"])
def shared(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where budgets are kept: in the gateway's process, or in Redis."""
    if request.param == "in-process":
        return {}
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    # closed: a budget that cannot be checked refuses (503) rather than admits; a generous timeout, since
    # 200 requests at once on two cores keep the gateway's loop busy for longer than the default 0.25 s
    return {"redis": {"url": url, "prefix": prefix, "failure_mode": "closed", "timeout_s": 5.0}}


@pytest.fixture
def slow_engine(start_engine: StartEngine) -> str:
    """Every answer takes 2.5 s to start: all 200 requests are admitted or refused before any ends."""
    return start_engine(profile("fast", ttft_base_s=2.5, itl_s=0.0))


def reservation(body_size: int) -> int:
    """What the gateway reserves for one of these requests: its worst case (inference/admission.py)."""
    now = datetime.now(UTC)
    return worst_case(BOOK, "fast", "qwen3-8b", now, body_size // 4, MAX_TOKENS, 1)


class Sizes:
    """Counts the requests the SDK sends, and their body sizes (all alike here)."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.sent = 0

    async def __call__(self, request: httpx2.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            self.seen.add(len(request.content))
            self.sent += 1


def async_sdk(gateway: Gateway, key: str, sizes: Sizes) -> openai.AsyncOpenAI:
    http = openai.DefaultAsyncHttpxClient(
        event_hooks={"request": [sizes]}, limits=httpx2.Limits(max_connections=250), timeout=30.0
    )
    return openai.AsyncOpenAI(base_url=gateway.v1, api_key=key, http_client=http, max_retries=2)


async def fire(client: openai.AsyncOpenAI, count: int) -> tuple[list[Any], list[openai.APIStatusError]]:
    async def one() -> Any:
        return await client.chat.completions.with_raw_response.create(
            model="qwen3-8b:fast", messages=MESSAGES, max_tokens=MAX_TOKENS
        )

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, openai.APIStatusError)]
    unexpected = [r for r in results if isinstance(r, BaseException) and r not in errors]
    assert not unexpected, unexpected[:3]
    return [r.parse() for r in results if not isinstance(r, BaseException)], errors


async def ledger_total(database_url: str, tenant: str) -> tuple[int, list[LedgerRow]]:
    """(the tenant's charges in the ledger ever, its rows), as far as the journal has drained: the rows read
    first, the total after them, so that a total never counts fewer rows than the list holds (the journal
    drains between the two reads)."""
    db = await open_database(database_url)
    try:
        ledger = Ledger(db)
        start = datetime(2000, 1, 1, tzinfo=UTC)
        rows = [row async for row in ledger.rows(tenant, start, datetime(2100, 1, 1, tzinfo=UTC))]
        total = await ledger.spent(start, None, tenant=tenant)
        return total, rows
    finally:
        await db.aclose()


def most_at_once(rows: list[LedgerRow]) -> int:
    """The most requests that were running at one moment (at the start of one of them)."""
    spans = [(row.record.started_at, row.record.ended_at) for row in rows]
    return max(sum(start <= at < end for start, end in spans) for at, _ in spans)


def budgets_of(gateway: Gateway, tenant: str) -> dict[tuple[str, str], dict[str, Any]]:
    response = admin(gateway, "GET", f"/tenants/{tenant}/budgets")
    assert response.status_code == 200, response.text
    return {(b["scope"], b["period"]): b for b in response.json()["data"]}


def test_200_concurrent_requests_against_a_budget_for_20_never_overrun_it(
    database_url: str,
    shared: dict[str, Any],
    slow_engine: str,
    start_gateway: StartGateway,
    tmp_path: Path,
) -> None:
    gateway = keyed_gateway(start_gateway, slow_engine, tmp_path, database_url, **shared)
    key = new_key(gateway)
    sizes = Sizes()

    async def scenario() -> None:
        client = async_sdk(gateway, key["secret"], sizes)
        try:
            # one request before any budget exists: its size gives the reservation, its cost is spent already
            first = await client.chat.completions.create(
                model="qwen3-8b:fast", messages=MESSAGES, max_tokens=MAX_TOKENS
            )
            assert first.usage is not None
            (size,) = sizes.seen
            each = reservation(size)
            # a shared counter starts from the ledger: let the journal drain the first row into it
            await until(lambda: ledger_total(database_url, "acme"), lambda found: len(found[1]) == 1)
            budget = admin(
                gateway, "PUT", "/tenants/acme/budgets/monthly", json={"limit": format_micros(21 * each)}
            )
            assert budget.status_code == 200, budget.text
            earlier = budget.json()["spent_micros"]
            assert 0 < earlier < each  # the first request's real cost, read from what the gateway counted
            room = 21 * each - earlier  # room for 20 reservations, not 21

            replies, errors = await fire(client, 200)
            # All 200 normally reach admission while the first 20 run (the engine takes 2.5 s to answer):
            # exactly 20 pass. On a machine too busy for that, the reservations of requests that ended
            # were released and let later ones in; the budget held either way (checked on the ledger below).
            assert len(replies) >= 20
            assert len(replies) + len(errors) == 200
            for error in errors:
                assert error.status_code == 429
                assert error.code == "insufficient_quota"
                assert error.type == "insufficient_quota"
                assert "monthly budget" in error.message
                assert error.response.headers["x-should-retry"] == "false"  # so the SDK did not retry
            assert sizes.seen == {size}
            assert sizes.sent == 201  # no retries: 429 insufficient_quota is final

            costs = sum(reply.usage.model_extra["cost_micros"] for reply in replies)
            # every reservation settled (Redis receives settlements in batches, a few ms later)
            settled = await until(
                lambda: asyncio.to_thread(budgets_of, gateway, "acme"),
                lambda found: found[("tenant", "monthly")]["reserved_micros"] == 0,
            )
            after = settled[("tenant", "monthly")]
            # to the real costs told to the client (the details say where a difference came from)
            told = sorted(reply.usage.model_extra["cost_micros"] for reply in replies)
            assert after["spent_micros"] == earlier + costs, (after, earlier, told)
            assert after["spent_micros"] <= 21 * each  # never above the limit
            if len(replies) == 20:
                assert costs < room
        finally:
            await client.close()

        # the ledger agrees, once the journal is drained
        admitted = 1 + len(replies)
        total, rows = await until(
            lambda: ledger_total(database_url, "acme"), lambda found: len(found[1]) == admitted
        )
        assert len(rows) == admitted
        assert total == sum(row.charge.total for row in rows) == after["spent_micros"]
        assert most_at_once(rows[1:]) <= 20  # never more reservations at once than the room for 20
        assert total <= after["limit_micros"]

    asyncio.run(scenario())


async def until(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Probe until `done` says yes, for 5 s at most; the last answer either way (the caller's asserts say
    what was wrong)."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        found = await probe()
        if done(found) or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.05)


def test_a_spent_budget_refuses_and_a_raised_one_admits(
    database_url: str, start_gateway: StartGateway, fast_engine: str, tmp_path: Path
) -> None:
    gateway = keyed_gateway(start_gateway, fast_engine, tmp_path, database_url)
    key = new_key(gateway)
    client = openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0)
    try:
        small = admin(gateway, "PUT", f"/keys/{key['id']}/budgets/daily", json={"limit": "0.000001"})
        assert small.status_code == 200, small.text
        assert small.json()["window"]["label"] == datetime.now(UTC).strftime("%Y-%m-%d")
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=5)
        assert refused.value.code == "insufficient_quota"
        assert "this API key's daily budget" in refused.value.message
        assert "0.000001 of 0.000001 USD is left" in refused.value.message
        raised = admin(gateway, "PUT", f"/keys/{key['id']}/budgets/daily", json={"limit": 5})
        assert raised.json()["limit"] == "5.000000"
        reply = client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=5)
        assert reply.choices[0].message.content
        # a tenant's total budget applies to its keys too
        admin(gateway, "PUT", "/tenants/acme/budgets/total", json={"limit": "0"})
        with pytest.raises(openai.RateLimitError) as tenant:
            client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=5)
        assert "your organization's total budget" in tenant.value.message
        deleted = admin(gateway, "DELETE", "/tenants/acme/budgets/total")
        assert deleted.json()["deleted"] is True
        assert admin(gateway, "DELETE", "/tenants/acme/budgets/total").status_code == 404
        assert client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=5).choices
    finally:
        client.close()


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/tenants/acme/budgets/weekly", {"limit": "1"}, 400, None),
        ("/tenants/acme/budgets/daily", {"limit": 1.5}, 400, None),  # money is never a float
        ("/tenants/acme/budgets/daily", {"limit": "-1"}, 400, "invalid_value"),
        ("/tenants/acme/budgets/daily", {"limit": "0.0000001"}, 400, "invalid_value"),
        ("/tenants/acme/budgets/daily", {"limit": "lots"}, 400, "invalid_value"),
        ("/tenants/acme/budgets/daily", {}, 400, None),
        ("/tenants/ghost/budgets/daily", {"limit": "1"}, 404, "tenant_not_found"),
        ("/keys/nope/budgets/daily", {"limit": "1"}, 404, "key_not_found"),
    ],
)
def test_bad_budgets_are_clear_errors(
    path: str,
    body: dict[str, Any],
    status: int,
    code: str | None,
    start_gateway: StartGateway,
    fast_engine: str,
    tmp_path: Path,
) -> None:
    gateway = keyed_gateway(start_gateway, fast_engine, tmp_path)
    new_key(gateway)
    response = admin(gateway, "PUT", path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    assert admin(gateway, "GET", "/tenants/acme/budgets").json()["data"] == []
    unauthorized = httpx.get(f"{gateway.url}/admin/tenants/acme/budgets")
    assert unauthorized.status_code == 401
    assert ADMIN not in unauthorized.text


def test_a_restarted_gateway_reads_earlier_spending_from_the_ledger(
    database_url: str, start_engine: StartEngine, tmp_path: Path
) -> None:
    engine = [start_engine(profile("fast", zero_latency=True))]
    settings = gateway_settings(
        engine,
        engine,
        auth={"mode": "keys", "admin_tokens": [ADMIN]},
        database={"url": database_url},
        ledger={"journal_dir": str(tmp_path / "journal")},
    )
    with serving(create_app(settings)) as url:
        wait_ready(url)
        first = Gateway(url, Recorder())
        key = new_key(first)
        admin(first, "PUT", "/tenants/acme/budgets/daily", json={"limit": "100"})
        client = openai.OpenAI(base_url=first.v1, api_key=key["secret"], max_retries=0)
        for _ in range(5):
            client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=20)
        client.close()
        spent = budgets_of(first, "acme")[("tenant", "daily")]["spent_micros"]
    assert spent > 0
    with serving(create_app(settings)) as url:
        wait_ready(url)
        second = Gateway(url, Recorder())
        again = budgets_of(second, "acme")[("tenant", "daily")]
        assert again["spent_micros"] == spent
        assert again["remaining_micros"] == 100_000_000 - spent
        # lowered under what was spent: the restarted gateway refuses
        admin(second, "PUT", "/tenants/acme/budgets/daily", json={"limit": format_micros(spent)})
        client = openai.OpenAI(base_url=second.v1, api_key=key["secret"], max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=20)
        client.close()


def test_a_premium_tenants_reservation_is_raised_by_the_class_rule(
    start_gateway: StartGateway, fast_engine: str, tmp_path: Path
) -> None:
    gateway = keyed_gateway(start_gateway, fast_engine, tmp_path)
    admin(gateway, "POST", "/tenants", json={"id": "gold", "priority_class": "premium"})
    bounds = {}
    for tenant in ("acme", "gold"):
        key = new_key(gateway, tenant)  # acme: created standard here
        assert (
            admin(gateway, "PUT", f"/tenants/{tenant}/budgets/daily", json={"limit": "0"}).status_code == 200
        )
        client = openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0)
        with client, pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, max_tokens=MAX_TOKENS)
        found = re.search(r"could cost up to (\d+\.\d{6}) USD", refused.value.message)
        assert found is not None, refused.value.message
        bounds[tenant] = int(found.group(1).replace(".", ""))
    # the same request's worst case, times the demo book's 1.2, rounded up
    assert bounds["gold"] == bounds["acme"] + -(-bounds["acme"] * 200_000 // 1_000_000)


def test_a_refusal_by_the_limits_or_the_budgets_gives_back_what_the_other_granted(
    database_url: str,
    shared: dict[str, Any],
    fast_engine: str,
    start_gateway: StartGateway,
    tmp_path: Path,
) -> None:
    """Limits and budgets together (in Redis both are asked at once, in one round trip): a request the
    limits refuse holds nothing of the budgets once refused, one the budgets refuse nothing of its tokens,
    and when both refuse, the limits' refusal is the answer and the only refusal counted."""
    tpm = 2000  # refills 33 tokens a second: a reservation not given back shows for the next ten seconds
    gateway = keyed_gateway(start_gateway, fast_engine, tmp_path, database_url, **shared)
    key = new_key(gateway, limits={"fast": {"rpm": 2, "tpm": tpm}})
    assert admin(gateway, "PUT", "/tenants/acme/budgets/daily", json={"limit": "5"}).status_code == 200
    client = openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0)

    def ask() -> Any:
        return client.chat.completions.with_raw_response.create(
            model="qwen3-8b", messages=MESSAGES, max_tokens=MAX_TOKENS
        )

    def refusals(reason: str) -> float:
        return metric(scrape(gateway.url), "tiergate_refusals_total", reason=reason, tier="fast")

    with client:
        answered = [ask(), ask()]
        with pytest.raises(openai.RateLimitError) as limited:  # the minute's two requests are spent
            ask()
        assert limited.value.code == "rate_limit_exceeded"
        # read as soon as the refusal is answered, not waited for: the budget's hold is already released
        daily = budgets_of(gateway, "acme")[("tenant", "daily")]
        assert daily["reserved_micros"] == 0, daily
        assert refusals("budget") == 0 and refusals("rate_limit") == 1

        admin(gateway, "PUT", "/tenants/acme/budgets/daily", json={"limit": "0"})
        with pytest.raises(openai.RateLimitError) as both:  # over both: the limits answer
            ask()
        assert both.value.code == "rate_limit_exceeded"
        assert refusals("budget") == 0 and refusals("rate_limit") == 2

        admin(gateway, "PATCH", f"/keys/{key['id']}", json={"limits": {"fast": {"tpm": tpm}}})
        with pytest.raises(openai.RateLimitError) as broke:  # within its limits, over its budget
            ask()
        assert broke.value.code == "insufficient_quota"
        assert refusals("budget") == 1 and refusals("rate_limit") == 2

        admin(gateway, "PUT", "/tenants/acme/budgets/daily", json={"limit": "5"})
        after = ask()
    # The first request found the bucket empty: what it saw left is the limit less its reservation (all
    # these requests reserve alike). The last one's left is that, less what the two answered ones really
    # used, plus the refill since: the budget's refusal gave its tokens back.
    reserved = tpm - int(answered[0].headers["x-ratelimit-remaining-tokens"])
    used = sum(
        reply.parse().usage.prompt_tokens + reply.parse().usage.completion_tokens for reply in answered
    )
    assert int(after.headers["x-ratelimit-remaining-tokens"]) >= tpm - reserved - used, after.headers
