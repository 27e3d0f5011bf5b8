"""OpenAI's `service_tier` (its processing tiers: flex, scale, priority) meets tiergate's tiers, which a
request chooses by model id. `auto` and `default` ask for nothing in particular: every tier serves them, and
no engine is sent the field. Any other value is a 400 naming `service_tier`, on every tier and endpoint,
before anything is reserved: vLLM takes no such field and would drop it without a word. Through the OpenAI
SDK, with the README's key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engines.simulator import create_simulator_app, profile
from tests.conftest import StartGateway
from tests.gateway.deliberation.test_admission import README_LIMITS
from tests.gateway.keys.test_http import keyed_gateway, new_key
from tests.servers import serving

ASK: Any = [{"role": "user", "content": "Is 91 a prime number?"}]


class BodiesSeen:
    """The simulator, keeping the JSON body of every completion it is asked for."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/completions"):
            await self._app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        self.bodies.append(orjson.loads(body))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)


@pytest.fixture
def served(start_gateway: StartGateway, tmp_path: Path) -> Iterator[tuple[openai.OpenAI, BodiesSeen]]:
    """The README's key on a gateway whose qwen3-8b deliberates with the default efforts, over a simulated
    reasoning model that keeps what it is sent."""
    config = profile("deliberate", zero_latency=True, short_reasoning_rate=0.0, output_tokens_range=(8, 24))
    engine = BodiesSeen(create_simulator_app(config))
    with serving(engine) as url:
        gateway = keyed_gateway(start_gateway, url, tmp_path, deliberation={})
        key = new_key(gateway, limits={"fast": README_LIMITS, "deliberate": README_LIMITS})
        with openai.OpenAI(base_url=gateway.v1, api_key=key["secret"], max_retries=0) as sdk:
            yield sdk, engine


@pytest.mark.parametrize("value", ["flex", "scale", "priority"])
def test_a_processing_tier_is_a_400_naming_it_on_every_tier(
    served: tuple[openai.OpenAI, BodiesSeen], value: Any
) -> None:
    sdk, engine = served
    for model in ("qwen3-8b:fast", "qwen3-8b:deliberate", "qwen3-8b"):
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(model=model, messages=ASK, service_tier=value, reasoning_effort="low")
        assert (refused.value.code, refused.value.param) == ("unsupported_value", "service_tier")
        assert "chosen by the model id" in refused.value.message, refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.completions.create(model="qwen3-8b:fast", prompt="2 + 2 =", extra_body={"service_tier": value})
    assert (refused.value.code, refused.value.param) == ("unsupported_value", "service_tier")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="qwen3-8b:deliberate", input="Is 91 a prime number?", service_tier=value)
    assert (refused.value.code, refused.value.param) == ("unsupported_value", "service_tier")
    assert engine.bodies == []  # refused at the edge: no engine was asked


@pytest.mark.parametrize("value", ["auto", "default"])
def test_auto_and_default_are_served_on_every_tier_and_sent_to_no_engine(
    served: tuple[openai.OpenAI, BodiesSeen], value: Any
) -> None:
    sdk, engine = served
    fast = sdk.chat.completions.create(model="qwen3-8b:fast", messages=ASK, service_tier=value)
    assert fast.model == "qwen3-8b:fast" and fast.choices[0].message.content
    deliberate = sdk.chat.completions.create(
        model="qwen3-8b:deliberate", messages=ASK, service_tier=value, reasoning_effort="low"
    )
    assert deliberate.model == "qwen3-8b:deliberate" and deliberate.choices[0].message.content
    details = deliberate.usage.completion_tokens_details if deliberate.usage is not None else None
    assert details is not None and details.reasoning_tokens  # it deliberated
    streamed = sdk.chat.completions.create(
        model="qwen3-8b:deliberate",
        messages=ASK,
        service_tier=value,
        reasoning_effort="low",
        stream=True,
    )
    finishes = [choice.finish_reason for chunk in streamed for choice in chunk.choices]
    assert [reason for reason in finishes if reason] == ["stop"]
    completion = sdk.completions.create(
        model="qwen3-8b:fast", prompt="2 + 2 =", extra_body={"service_tier": value}
    )
    assert completion.choices[0].text
    assert len(engine.bodies) >= 4
    assert not [body for body in engine.bodies if "service_tier" in body], engine.bodies
