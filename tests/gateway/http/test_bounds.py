"""Every integer that reaches money, SQL or Lua is bounded at the edge: out-of-range values are 400s naming
the parameter, never a 500 from an overflow deeper down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from pricing import MAX_MICROS, format_micros
from tests.conftest import Gateway, StartGateway
from tests.gateway.keys.test_http import admin, keyed_gateway, new_key


def assert_400(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["param"] == param, error


@pytest.fixture
def gateway(
    start_gateway: StartGateway, fast_engine: str, tmp_path: Path, redis_url: str, redis_prefix: str
) -> Gateway:
    """Keys in SQLite, limits and budgets in Redis (where an overflow used to be a 500)."""
    return keyed_gateway(
        start_gateway,
        fast_engine,
        tmp_path,
        redis={"url": redis_url, "prefix": redis_prefix, "failure_mode": "closed", "timeout_s": 5.0},
    )


def test_a_period_past_the_calendar_is_a_400(gateway: Gateway) -> None:
    key = new_key(gateway)
    bearer = {"authorization": f"Bearer {key['secret']}"}
    for period in ("9999-12", "0000-01", "2026-13", "99999-01"):
        assert_400(httpx.get(gateway.v1 + "/usage", params={"period": period}, headers=bearer), "period")
        assert_400(
            admin(gateway, "GET", "/billing/invoice", params={"tenant": "acme", "period": period}), "period"
        )
        assert_400(admin(gateway, "GET", "/billing/export", params={"period": period}), "period")
    assert httpx.get(gateway.v1 + "/usage", params={"period": "9999-11"}, headers=bearer).status_code == 200


@pytest.mark.parametrize(
    ("limit", "status"),
    [
        ("99999999999999999999", 400),  # an overflow of SQLite's integers, before
        (MAX_MICROS + 1, 400),  # whole units: far above
        (format_micros(MAX_MICROS + 1), 400),  # one micro above the largest exact amount
        (format_micros(MAX_MICROS), 200),
    ],
)
def test_a_budget_is_at_most_the_largest_exact_amount(gateway: Gateway, limit: Any, status: int) -> None:
    new_key(gateway)
    response = admin(gateway, "PUT", "/tenants/acme/budgets/daily", json={"limit": limit})
    if status == 400:
        assert_400(response, "limit")
        assert admin(gateway, "GET", "/tenants/acme/budgets").json()["data"] == []
    else:
        assert response.status_code == 200, response.text
        assert response.json()["limit_micros"] == MAX_MICROS


def test_rate_limits_are_bounded(gateway: Gateway) -> None:
    new_key(gateway)
    body = {"tenant": "acme", "tiers": ["fast"], "limits": {"fast": {"tpm": 10**12}}}
    response = admin(gateway, "POST", "/keys", json=body)
    assert response.status_code == 400, response.text
    assert "tpm" in response.json()["error"]["param"]


def test_huge_output_bounds_are_a_400_or_a_refusal_never_a_500(gateway: Gateway) -> None:
    key = new_key(gateway)
    admin(gateway, "PUT", f"/keys/{key['id']}/budgets/daily", json={"limit": "1"})
    messages: Any = [{"role": "user", "content": "hi"}]
    with openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0) as client:
        # llama-3.1-8b has no max_model_len: nothing clamps the bound before money is reserved from it
        with pytest.raises(openai.BadRequestError) as huge:
            client.chat.completions.create(model="llama-3.1-8b", messages=messages, max_tokens=2**62)
        assert huge.value.param == "max_tokens"
        for field in ("max_tokens", "max_completion_tokens"):
            with pytest.raises(openai.RateLimitError) as refused:  # the largest bound taken: over budget
                client.chat.completions.create(
                    model="llama-3.1-8b", messages=messages, extra_body={field: 2**31 - 1}
                )
            assert refused.value.code == "insufficient_quota"
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="llama-3.1-8b", prompt=["a"] * 64, max_tokens=2**31 - 1, n=128)
        reply = client.chat.completions.create(model="llama-3.1-8b", messages=messages, max_tokens=5)
        assert reply.choices[0].message.content
