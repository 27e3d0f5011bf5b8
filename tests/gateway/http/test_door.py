"""The door: a worker's inference requests beyond its limit, or while it is short of descriptors, are refused
with 503 `gateway_overloaded` before any work; the admitted ones (streams to their last byte) go on."""

from __future__ import annotations

import asyncio
import errno
from types import SimpleNamespace

import httpx
from starlette.types import Receive, Scope, Send

from gateway.http.door import SHUT_S, Door, DoorMiddleware
from gateway.state import GatewayState
from tests.conftest import gateway_settings

CHAT = "/v1/chat/completions"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Gated:
    """An app that starts each inference answer, then finishes it only once `gate` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self._held = 0
        self._arrived = asyncio.Condition()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first ", "more_body": True})
        if scope["path"].startswith("/v1/"):
            async with self._arrived:
                self._held += 1
                self._arrived.notify_all()
            await self.gate.wait()
        await send({"type": "http.response.body", "body": b"last"})

    async def holding(self, count: int) -> None:
        """Wait until `count` inference answers are started and held."""
        async with asyncio.timeout(10), self._arrived:
            await self._arrived.wait_for(lambda: self._held >= count)


def client_for(door: Door, app: Gated) -> httpx.AsyncClient:
    guarded = DoorMiddleware(app)
    state = SimpleNamespace(door=door)  # what the lifespan puts in every request's state

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        await guarded({**scope, "state": {"gateway": state}}, receive, send)

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=with_state), base_url="http://gateway")


def assert_overloaded(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "gateway_overloaded"
    assert int(response.headers["retry-after"]) >= 1


async def test_over_the_limit_the_excess_is_refused_while_admitted_requests_complete() -> None:
    door, app = Door(2), Gated()
    async with client_for(door, app) as client:
        admitted = [asyncio.create_task(client.post(CHAT, json={})) for _ in range(2)]
        await app.holding(2)
        assert door.in_flight == 2
        assert_overloaded(await client.post(CHAT, json={}))
        assert_overloaded(await client.post("/v1/completions", json={}))
        assert (await client.get("/healthz")).status_code == 200  # only inference is guarded
        app.gate.set()
        for task in admitted:
            response = await task
            assert (response.status_code, response.content) == (200, b"first last")
        assert door.in_flight == 0
        assert (await client.post(CHAT, json={})).status_code == 200  # the door counted them out


async def test_a_stream_counts_until_its_last_byte() -> None:
    door, app = Door(1), Gated()
    async with client_for(door, app) as client:
        streaming = asyncio.create_task(client.post(CHAT, json={}))
        await app.holding(1)
        assert door.in_flight == 1
        assert_overloaded(await client.post(CHAT, json={}))  # its headers and first chunk are long sent
        app.gate.set()
        assert (await streaming).content == b"first last"
        assert door.in_flight == 0


async def test_a_shortage_shuts_the_door_for_a_moment() -> None:
    clock = Clock()
    door, app = Door(10, clock=clock), Gated()
    app.gate.set()
    async with client_for(door, app) as client:
        door.shut()
        assert_overloaded(await client.post(CHAT, json={}))
        clock.now += SHUT_S
        assert (await client.post(CHAT, json={})).status_code == 200


class Exhausted(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        cause = OSError(errno.EMFILE, "Too many open files")
        raise httpx.ConnectError(f"cannot connect: {cause}", request=request) from cause


async def test_the_pools_shut_the_door_when_the_gateway_is_short() -> None:
    settings = gateway_settings(["http://127.0.0.1:9"], ["http://127.0.0.1:9"])
    state = await GatewayState.create(settings, transport=Exhausted())
    try:
        assert state.door.admit()
        state.door.leave()
        await state.pools["fast"].check_health()
        assert not state.door.admit()
    finally:
        await state.aclose()


async def test_the_limit_is_the_setting() -> None:
    replicas = ["http://127.0.0.1:9"]
    settings = gateway_settings(replicas, replicas, server={"max_concurrent_requests": 1})
    state = await GatewayState.create(settings)
    try:
        assert state.door.admit() and not state.door.admit()
    finally:
        await state.aclose()
