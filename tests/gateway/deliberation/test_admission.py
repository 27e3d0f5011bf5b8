"""The deliberate tier under a real customer's limits (the README's key: 600 RPM, 200,000 TPM): admission
reserves an honest bound of what a deliberation can spend, `max_tokens` bounds everything a sample
generates, and a bound that cannot hold the promised depth is refused with a reason - or served
best-effort, billed fast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
import redis

from engines.simulator import create_simulator_app, profile
from tests.chat import user
from tests.conftest import Gateway, StartGateway
from tests.gateway.deliberation.test_http import depth_of, extra, ledger_row
from tests.gateway.keys.test_http import keyed_gateway, new_key
from tests.servers import serving

README_LIMITS = {"rpm": 600, "tpm": 200_000}
MESSAGES = user("What is 2+2?")


@contextmanager
def engine(**overrides: Any) -> Iterator[str]:
    """A simulated reasoning model (zero latency unless told otherwise)."""
    config = profile(
        "deliberate",
        **{"zero_latency": True, "short_reasoning_rate": 0.0, "output_tokens_range": (8, 24), **overrides},
    )
    with serving(create_simulator_app(config)) as url:
        yield url


def customer(start_gateway: StartGateway, url: str, tmp_path: Path, **limits: int) -> tuple[Gateway, str]:
    """A gateway whose qwen3-8b deliberates with the default efforts, and a key with the README's limits."""
    gateway = keyed_gateway(start_gateway, url, tmp_path, deliberation={})
    quota = {**README_LIMITS, **limits}
    key = new_key(gateway, limits={"fast": quota, "deliberate": quota})
    return gateway, str(key["secret"])


def test_eight_concurrent_low_effort_deliberations_are_all_admitted(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    """Each used to reserve the product of every maximum (~655k tokens, clamped to the whole 200k): one of
    four got in. Each now reserves its plan's bound; a slow engine keeps all eight running at once."""
    with engine(zero_latency=False, ttft_base_s=1.0, itl_s=0.0, reasoning_tokens_range=(300, 400)) as url:
        gateway, secret = customer(start_gateway, url, tmp_path)

        async def eight() -> list[Any]:
            async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=secret, max_retries=0) as sdk:
                calls = [
                    sdk.chat.completions.with_raw_response.create(
                        model="qwen3-8b:deliberate", messages=MESSAGES, reasoning_effort="low"
                    )
                    for _ in range(8)
                ]
                return list(await asyncio.gather(*calls, return_exceptions=True))

        replies = asyncio.run(eight())
    refused = [reply for reply in replies if isinstance(reply, BaseException)]
    assert not refused, refused[:2]
    used = []
    for raw in replies:
        answer = raw.parse()
        assert answer.choices[0].message.content and depth_of(answer.usage)["floor_met"] is True
        used.append(answer.usage.total_tokens)
    # each admission left the bucket lower by its reservation (all alike: the same request and plan)
    left = sorted((int(raw.headers["x-ratelimit-remaining-tokens"]) for raw in replies), reverse=True)
    reserved = [before - after for before, after in zip([README_LIMITS["tpm"], *left], left, strict=False)]
    # an honest upper bound: above what any of them used, with room for eight in the limit (the bucket
    # refills a little between two admissions, which can only make a reservation read smaller)
    assert max(used) <= min(reserved) and max(reserved) <= README_LIMITS["tpm"] // 8


def test_a_bound_below_the_floor_is_refused_or_served_best_effort_and_billed_fast(
    start_gateway: StartGateway, tmp_path: Path, database_url: str
) -> None:
    with engine(reasoning_tokens_range=(300, 400)) as url:
        gateway = keyed_gateway(start_gateway, url, tmp_path, database_url, deliberation={})
        key = new_key(gateway, limits={"deliberate": README_LIMITS})
        with openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0) as sdk:
            for field in ("max_tokens", "max_completion_tokens"):
                with pytest.raises(openai.BadRequestError) as refused:
                    sdk.chat.completions.create(
                        model="qwen3-8b:deliberate",
                        messages=MESSAGES,
                        reasoning_effort="low",
                        extra_body={field: 200},
                    )
                error = refused.value
                assert (error.code, error.param) == ("max_tokens_below_depth_floor", field)
                assert "at least 256 reasoning tokens" in error.message  # the low effort's floor
                assert "at least 320" in error.message  # and room for an answer (64 by default)
            raw = sdk.chat.completions.with_raw_response.create(
                model="qwen3-8b:deliberate",
                messages=MESSAGES,
                reasoning_effort="low",
                max_tokens=200,
                extra_headers={"x-tiergate-depth": "best-effort"},
            )
    answer = raw.parse()
    assert answer.usage is not None and answer.usage.completion_tokens <= 200
    depth = depth_of(answer.usage)
    assert depth["floor"] == 256 and depth["floor_met"] is False
    assert answer.choices[0].message.content  # the reasoning was capped to leave the answer room
    row = ledger_row(database_url, raw.headers["x-tiergate-request-id"])
    assert row.charge.rated_tier == "fast"  # a missed floor is billed at the fast tier's prices
    assert "depth_premium" not in {line.kind for line in row.charge.lines}


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_bounds_every_token_a_sample_generates_across_extensions(
    start_gateway: StartGateway, tmp_path: Path, stream: bool
) -> None:
    """Short reasoning (30-40 tokens a call) is extended towards the floor; discarded answers and
    extensions all count against the one bound, and the answer keeps its room."""
    # answers of 100-150 tokens after 30-40 of reasoning: four calls would write 520-760 tokens
    with engine(reasoning_tokens_range=(30, 40), output_tokens_range=(100, 150)) as url:
        gateway, secret = customer(start_gateway, url, tmp_path)
        with openai.OpenAI(base_url=gateway.v1, api_key=secret, max_retries=0) as sdk:
            body: dict[str, Any] = {
                "model": "qwen3-8b:deliberate",
                "messages": MESSAGES,
                "reasoning_effort": "low",
                "max_completion_tokens": 400,
            }
            if stream:
                chunks = list(
                    sdk.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
                )
                usage = chunks[-1].usage
                content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                answer = sdk.chat.completions.create(**body)
                usage, content = answer.usage, answer.choices[0].message.content or ""
    assert usage is not None
    assert depth_of(usage)["extensions"] >= 1
    assert usage.completion_tokens <= 400
    assert content


def test_a_request_whose_bound_alone_exceeds_the_tpm_limit_says_so(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    with engine() as url:
        gateway, secret = customer(start_gateway, url, tmp_path, tpm=5_000)
        with openai.OpenAI(base_url=gateway.v1, api_key=secret, max_retries=0) as sdk:
            for body in (
                {"model": "qwen3-8b:deliberate", "reasoning_effort": "high"},
                {"model": "qwen3-8b:fast", "max_tokens": 10_000},
            ):
                with pytest.raises(openai.RateLimitError) as refused:
                    sdk.chat.completions.create(model="unused", messages=MESSAGES, extra_body=body)
                error = refused.value
                assert error.code == "rate_limit_exceeded"
                assert "whole limit of 5000 tokens per minute" in error.message
                assert error.response.headers["x-should-retry"] == "false"
            # the bucket was never touched: a request that fits is admitted at once
            small = sdk.chat.completions.create(model="qwen3-8b:fast", messages=MESSAGES, max_tokens=50)
            assert small.usage is not None and 0 < small.usage.completion_tokens <= 50
            assert extra(small.usage)["cost_micros"] > 0


def test_limits_in_redis_are_refunded_before_each_response_ends(
    start_gateway: StartGateway, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """A client sending deliberations back to back, no pause, with limits shared in Redis: each response
    ends only once its own refund has landed, so the next request finds the bucket as it really is (it used
    to meet a 429 with retry-after 51 s: the refund was still waiting for its batch)."""
    shared = {"url": redis_url, "prefix": redis_prefix, "failure_mode": "closed", "timeout_s": 5.0}
    with engine(reasoning_tokens_range=(300, 400)) as url:
        gateway = keyed_gateway(start_gateway, url, tmp_path, deliberation={}, redis=shared)
        key = new_key(gateway, limits={"fast": README_LIMITS, "deliberate": README_LIMITS})
        bucket = f"{redis_prefix}rl:{{{key['id']}:deliberate}}:t"
        used = 0
        with (
            redis.Redis.from_url(redis_url) as store,
            openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0) as sdk,
        ):
            for _ in range(20):
                reply = sdk.chat.completions.create(
                    model="qwen3-8b:deliberate", messages=MESSAGES, reasoning_effort="low"
                )
                assert reply.usage is not None
                used += reply.usage.total_tokens
                # the bucket holds what was used, not this request's reservation (~6,400 tokens) as well
                # in 1/60000 of a token (gateway/limits/gcra.py); the key expires once the bucket has drained
                # (a slow client may read after that): empty, then, which an unrefunded reservation is not yet
                stored = store.get(bucket)
                fill = 0 if stored is None else int(stored.split(b":")[0])
                assert fill / 60_000 <= used


def test_a_key_at_its_tpm_limit_is_told_when_to_come_back(
    start_gateway: StartGateway, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    shared = {"url": redis_url, "prefix": redis_prefix, "failure_mode": "closed", "timeout_s": 5.0}
    with engine(output_tokens_range=(9000, 9000)) as url:
        gateway = keyed_gateway(start_gateway, url, tmp_path, redis=shared)
        key = new_key(gateway, limits={"fast": {"tpm": 60_000}})  # 1,000 tokens a second
        with openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0) as sdk:
            refused = None
            for _ in range(20):  # ~9,000 tokens each: the bucket fills within a few
                try:
                    sdk.chat.completions.create(model="qwen3-8b:fast", messages=MESSAGES, max_tokens=10_000)
                except openai.RateLimitError as exc:
                    refused = exc
                    break
            assert refused is not None and refused.code == "rate_limit_exceeded"
            wait_ms = int(refused.response.headers["retry-after-ms"])
            assert 0 < wait_ms <= 10_000  # never more than this request's ~10,000 tokens take to drain
            assert int(refused.response.headers["retry-after"]) == -(-wait_ms // 1000)
            time.sleep(wait_ms / 1000)
            again = sdk.chat.completions.create(model="qwen3-8b:fast", messages=MESSAGES, max_tokens=10_000)
            assert again.choices[0].finish_reason in ("stop", "length")
