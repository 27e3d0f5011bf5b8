"""Helpers for the simulator tests: configs, an in-process client, a real server, SSE and metrics parsing."""

from __future__ import annotations

import asyncio
import importlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvicorn
from openai import AsyncOpenAI

from engines.simulator import SimulatorApp, SimulatorConfig, create_simulator_app, profile

CHAT = "/v1/chat/completions"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Explain speculative decoding in two sentences."},
]


def fast(**overrides: Any) -> SimulatorConfig:
    """The fast profile, without latency unless the overrides say otherwise."""
    return profile("fast", **{"zero_latency": True, **overrides})


def deliberate(**overrides: Any) -> SimulatorConfig:
    return profile("deliberate", **{"zero_latency": True, **overrides})


def plain(**overrides: Any) -> SimulatorConfig:
    """The plain profile (an instruct model that follows a chain-of-thought instruction), without latency."""
    return profile("plain", **{"zero_latency": True, **overrides})


def assert_fits(instance: object, schema: dict[str, Any]) -> None:
    """Validate `instance` against a JSON schema, formats included (jsonschema, a test dependency without
    type stubs)."""
    jsonschema: Any = importlib.import_module("jsonschema")
    jsonschema.validate(instance, schema, format_checker=jsonschema.FormatChecker())


def sse_events(body: bytes) -> list[Any]:
    """The JSON payloads of an SSE body, with "[DONE]" kept as the string."""
    events: list[Any] = []
    for block in body.split(b"\n\n"):
        if not block:
            continue
        assert block.startswith(b"data: "), block
        data = block[len(b"data: ") :]
        events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return events


@dataclass
class Sim:
    app: SimulatorApp
    client: httpx.AsyncClient

    async def chat(self, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        body.setdefault("model", "qwen3-8b")
        body.setdefault("messages", MESSAGES)
        return await self.client.post(CHAT, json=body, headers=headers)

    async def metrics(self) -> str:
        return (await self.client.get("/metrics")).text


SimFactory = Callable[[SimulatorConfig], Awaitable[Sim]]


@asynccontextmanager
async def serving(app: SimulatorApp) -> AsyncIterator[str]:
    """Run `app` on a real uvicorn server on a free port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, loop="none", http="httptools", ws="none", lifespan="on", log_level="critical", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def openai_client(config: SimulatorConfig) -> AsyncIterator[AsyncOpenAI]:
    """The OpenAI SDK, talking to a simulator with `config` on a real server."""
    async with (
        serving(create_simulator_app(config)) as url,
        AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client,
    ):
        yield client
