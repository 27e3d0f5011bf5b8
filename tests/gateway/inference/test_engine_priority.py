"""A pool with `priority: true` is told each request's tier as vLLM's `priority` field (the fast tier first);
other pools are sent no such field (vLLM refuses one without `--scheduling-policy priority`)."""

from __future__ import annotations

import httpx
import orjson

from engines import EngineTransport
from gateway import create_app
from gateway.tiers import ENGINE_PRIORITY, Tier
from tests.chat import MESSAGES
from tests.conftest import gateway_settings, wait_ready
from tests.servers import serving


class Recording(httpx.AsyncBaseTransport):
    """The engine transport, keeping the JSON body of every completion it sends, by pool port."""

    def __init__(self) -> None:
        self._inner = EngineTransport()
        self.bodies: list[dict[str, object]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/completions"):
            self.bodies.append(orjson.loads(await request.aread()))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_each_tier_is_sent_its_priority_where_the_pool_asks(fast_engine: str) -> None:
    recording = Recording()
    settings = gateway_settings([fast_engine], [fast_engine], deliberate_pool={"priority": True})
    with serving(create_app(settings, transport=recording)) as url:
        wait_ready(url)
        for model in ("qwen3-8b:deliberate", "qwen3-8b:fast"):
            body = {"model": model, "messages": MESSAGES}
            assert httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
    deliberate, fast = recording.bodies
    assert deliberate["priority"] == ENGINE_PRIORITY[Tier.DELIBERATE] == 10
    assert "priority" not in fast  # its pool does not ask
    assert ENGINE_PRIORITY[Tier.FAST] < ENGINE_PRIORITY[Tier.DELIBERATE]  # lower is scheduled first
