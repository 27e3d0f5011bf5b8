"""Failure injection by the x-sim-fault header and by config, and health."""

from __future__ import annotations

import time

import pytest

from engines.simulator import Fault, parse_fault

from .sim_support import Sim, SimFactory, fast


def test_fault_header_grammar() -> None:
    assert parse_fault("status=503") == Fault(status=503)
    assert parse_fault(" Die-After = 3 ; stall-mid=0.5,stall=2.5 ") == Fault(
        die_after=3, stall_s=2.5, stall_mid_s=0.5
    )
    assert parse_fault("status=429, retry-after=0") == Fault(status=429, retry_after_s=0)
    assert parse_fault("") == Fault()


@pytest.mark.parametrize(
    "value", ["status=200", "status=abc", "die-after=-1", "stall=-1", "stall=nan", "explode=1", "status"]
)
def test_bad_fault_headers_are_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="invalid x-sim-fault item"):
        parse_fault(value)


async def test_injected_statuses_carry_retry_after_for_429_and_503(sim: Sim) -> None:
    unavailable = await sim.chat(headers={"x-sim-fault": "status=503"})
    assert unavailable.status_code == 503
    assert unavailable.headers["retry-after"] == "1"
    assert unavailable.json()["error"] == {
        "message": "Injected fault: status 503.",
        "type": "ServiceUnavailableError",
        "param": None,
        "code": 503,
    }
    limited = await sim.chat(headers={"x-sim-fault": "status=429; retry-after=0"})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "0"
    assert limited.json()["error"]["type"] == "RateLimitError"
    failed = await sim.chat(headers={"x-sim-fault": "status=500"})
    assert failed.status_code == 500 and "retry-after" not in failed.headers
    malformed = await sim.chat(headers={"x-sim-fault": "status=teapot"})
    assert malformed.status_code == 400
    completions = await sim.client.post(
        "/v1/completions", json={"prompt": "x"}, headers={"x-sim-fault": "status=503"}
    )
    assert completions.status_code == 503


async def test_config_error_rate_is_seeded_and_reproducible(sim_factory: SimFactory) -> None:
    async def statuses(seed: int) -> list[int]:
        sim = await sim_factory(fast(error_rate=0.5, error_status=429, seed=seed))
        return [(await sim.chat(max_tokens=1)).status_code for _ in range(40)]

    first = await statuses(3)
    assert set(first) == {200, 429}
    assert 8 <= first.count(429) <= 32
    assert await statuses(3) == first
    always = await sim_factory(fast(error_rate=1.0, error_status=500))
    assert (await always.chat()).status_code == 500


async def test_stall_delays_the_response(sim: Sim) -> None:
    started = time.perf_counter()
    response = await sim.chat(max_tokens=2, headers={"x-sim-fault": "stall=0.15"})
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.15
    started = time.perf_counter()
    streamed = await sim.chat(max_tokens=2, stream=True, headers={"x-sim-fault": "stall-mid=0.1"})
    assert streamed.status_code == 200 and streamed.content.endswith(b"data: [DONE]\n\n")
    assert time.perf_counter() - started >= 0.1


async def test_config_stall_applies_to_every_request(sim_factory: SimFactory) -> None:
    sim = await sim_factory(fast(stall_seconds=0.1))
    started = time.perf_counter()
    assert (await sim.chat(max_tokens=1)).status_code == 200
    assert time.perf_counter() - started >= 0.1


async def test_unhealthy_engine_fails_health_and_requests(sim_factory: SimFactory) -> None:
    sim = await sim_factory(fast(healthy=False))
    health = await sim.client.get("/health")
    assert health.status_code == 503 and health.content == b""
    refused = await sim.chat()
    assert refused.status_code == 503 and "retry-after" in refused.headers
    sim.app.healthy = True  # a replica comes back
    assert (await sim.client.get("/health")).status_code == 200
    assert (await sim.chat(max_tokens=1)).status_code == 200
