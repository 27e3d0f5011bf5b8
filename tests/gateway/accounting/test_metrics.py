"""GET /metrics: what the gateway counts of real requests, read back as Prometheus parses it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engines.simulator import create_simulator_app, profile
from gateway import create_app
from tests.chat import user
from tests.conftest import gateway_settings, wait_ready
from tests.gateway.keys.test_http import ADMIN
from tests.servers import serving

MESSAGES = user("What is 6 times 7?")


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url + "/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in found.items() if n == name and wanted <= have)


def test_requests_tokens_money_latency_and_depth_are_counted(tmp_path: Path) -> None:
    fast = profile("fast", zero_latency=True)
    deliberate = profile(
        "deliberate", zero_latency=True, reasoning_tokens_range=(40, 50), short_reasoning_rate=0
    )
    with (
        serving(create_simulator_app(fast)) as fast_url,
        serving(create_simulator_app(deliberate)) as slow_url,
    ):
        settings = gateway_settings(
            [fast_url],
            [slow_url],
            deliberation={"efforts": {"medium": {"floor": 120, "max_extensions": 5}}},
            auth={"mode": "keys", "admin_tokens": [ADMIN]},
            database={"url": f"sqlite:///{tmp_path / 'tiergate.sqlite3'}"},
        )
        with serving(create_app(settings)) as url:
            wait_ready(url)
            headers = {"authorization": f"Bearer {ADMIN}"}
            httpx.post(url + "/admin/tenants", json={"id": "acme"}, headers=headers)
            key = httpx.post(
                url + "/admin/keys",
                json={"tenant": "acme", "tiers": ["fast", "deliberate"], "limits": {"fast": {"rpm": 3}}},
                headers=headers,
            ).json()["secret"]
            client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
            plain = client.chat.completions.create(model="qwen3-8b:fast", messages=MESSAGES)
            streamed = list(
                client.chat.completions.create(
                    model="qwen3-8b:fast",
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            deep = client.chat.completions.create(model="qwen3-8b:deliberate", messages=MESSAGES)
            client.chat.completions.create(model="qwen3-8b:fast", messages=MESSAGES)
            with pytest.raises(openai.RateLimitError):  # the 4th fast request in a minute: rpm 3
                client.chat.completions.create(model="qwen3-8b:fast", messages=MESSAGES)
            client.close()
            found = samples(url)

    ok = {"outcome": "ok", "status": "200", "model": "qwen3-8b"}
    assert value(found, "tiergate_requests_total", tier="fast", endpoint="chat", **ok) == 3
    assert value(found, "tiergate_requests_total", tier="deliberate", **ok) == 1
    assert value(found, "tiergate_refusals_total", reason="rate_limit", tier="fast") == 1
    usage = [plain.usage, streamed[-1].usage, deep.usage]
    assert all(u is not None for u in usage)
    prompt = value(found, "tiergate_tokens_total", kind="prompt")
    assert prompt >= sum(u.prompt_tokens for u in usage if u is not None)
    depth = (deep.usage.model_extra or {})["reasoning_depth"] if deep.usage else {}
    reasoning = value(found, "tiergate_tokens_total", tier="deliberate", kind="reasoning")
    assert reasoning == depth["reasoning_tokens"] >= 120
    cost = value(found, "tiergate_cost_micros_total", currency="USD")
    assert cost > 0 and cost == int(cost)
    assert value(found, "tiergate_deliberation_floor_total", met="true") == 1
    assert value(found, "tiergate_deliberation_extensions_total") == depth["extensions"] >= 2
    assert value(found, "tiergate_reasoning_tokens_count", tier="deliberate") == 1
    assert value(found, "tiergate_request_duration_seconds_count", tier="fast") == 3
    assert value(found, "tiergate_gateway_overhead_seconds_count") == 4
    assert value(found, "tiergate_time_to_first_token_seconds_count", tier="fast") == 1  # the stream
    assert value(found, "tiergate_replica_up", pool="fast", replica=fast_url) == 1
    assert value(found, "tiergate_pool_requests_in_flight", pool="fast") == 0
    assert ("tiergate_journal_backlog_rows", frozenset()) in found
    assert not any("tenant" in dict(labels) for _, labels in found)  # opt-in only


def test_one_json_log_line_per_request_without_text(gateway: Any, caplog: pytest.LogCaptureFixture) -> None:
    secret = "the-prompt-text-must-not-be-logged"
    with caplog.at_level(logging.INFO, logger="tiergate.requests"):
        client = openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0)
        reply = client.chat.completions.with_raw_response.create(
            model="qwen3-8b:fast", messages=[{"role": "user", "content": secret}], max_tokens=5
        )
        client.close()
        request_id = reply.headers["x-tiergate-request-id"]
        gateway.recorder.wait_for(request_id)
    lines = [orjson.loads(r.getMessage()) for r in caplog.records if request_id in r.getMessage()]
    assert len(lines) == 1
    (line,) = lines
    assert line["event"] == "request" and line["tier"] == "fast" and line["outcome"] == "ok"
    assert line["completion_tokens"] == reply.parse().usage.completion_tokens  # type: ignore[union-attr]
    assert line["cost_micros"] > 0 and line["currency"] == "USD" and line["duration_ms"] > 0
    assert secret not in caplog.text
