"""The door: a worker's inference requests beyond its limit, or while it is short of descriptors, are refused
with 503 `gateway_overloaded` before any work; the admitted ones (streams to their last byte) go on."""

from __future__ import annotations

import asyncio
import errno
from types import SimpleNamespace

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from engines import LoopLag
from gateway.http.dispatch import GatewayApp
from gateway.http.door import SHUT_S, AdaptiveLimit, Door
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


class Relayed(Response):
    """A response that is `Gated`'s answer."""

    def __init__(self, app: Gated) -> None:
        super().__init__()
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def client_for(door: Door, app: Gated) -> httpx.AsyncClient:
    """The gateway's app, its inference routes answered by `app` and behind `door`."""

    async def inference(request: Request) -> Response:
        return Relayed(app)

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    guarded = GatewayApp(direct={("POST", CHAT): inference, ("POST", "/v1/completions"): inference})
    guarded.add_route("/healthz", healthz)
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


def test_a_request_in_its_tiers_slot_still_occupies_the_worker() -> None:
    door = Door(10)
    assert door.admit() and door.admit()
    door.hand_over()  # a deliberation takes its tier's slot: out of the limit's count, not out of the worker
    assert (door.in_flight, door.occupied) == (1, 2)
    door.leave()
    assert door.occupied == 1


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


def lagging(clock: Clock, late_s: float) -> LoopLag:
    """A loop lag whose next tick, due now, is `late_s` late."""
    lag = LoopLag(0.05, clock=clock)
    lag.expect(clock.now - late_s)
    return lag


async def test_while_the_loop_lags_past_the_threshold_every_request_is_refused() -> None:
    clock = Clock()
    lag = lagging(clock, 0.5)
    door, app = Door(10, clock=clock, lag=lag, shed_lag_s=0.1), Gated()
    app.gate.set()
    async with client_for(door, app) as client:
        assert_overloaded(await client.post(CHAT, json={}))
        assert door.saturated and door.refused["loop_lag"] == 1
        lag.tick(clock.now - 0.5, clock.now)
        for _ in range(12):  # the loop keeps up again
            lag.tick(clock.now, clock.now)
        assert not door.saturated
        assert (await client.post(CHAT, json={})).status_code == 200


def test_the_adaptive_limit_backs_off_on_lag_and_probes_upwards_while_it_binds() -> None:
    limit = AdaptiveLimit(100, target_s=0.02, floor=8)
    assert limit.update(0.001, 10) == 100  # never saturated: the fixed limit's
    assert limit.update(0.5, 50) == 45  # the loop lags with 50 in flight: 90% of them
    for _ in range(10):  # then it waits for the cut to show in the lag
        assert limit.update(0.5, 45) == 45
    assert limit.update(0.5, 45) == 40
    assert limit.update(0.001, 10) == 40  # keeping up, but it does not bind: it stays
    assert limit.update(0.001, 39) == 41  # it binds: one more per tick
    assert limit.update(0.001, 40) == 42
    for _ in range(60):
        limit.update(1.0, 0)
    assert limit.limit == 8  # never below the floor
    for _ in range(200):
        limit.update(0.0, limit.limit)
    assert limit.limit == 100  # nor above the ceiling


def test_the_adaptive_limit_backs_off_when_the_loop_is_busier_than_its_target() -> None:
    limit = AdaptiveLimit(1000, target_s=0.05, target_utilization=0.8)
    assert limit.update(0.0, 100, 0.79) == 1000  # busy, under the target: nothing to do
    assert limit.update(0.0, 100, 0.85) == 90  # a little over: 90% of those in flight, as for lag
    for _ in range(10):
        limit.update(0.0, 90, 1.0)
    assert limit.update(0.0, 90, 1.0) == 72  # far over: in proportion, 0.8 / 1.0 of those in flight
    for _ in range(10):
        limit.update(0.0, 72, 1.0)
    deep = AdaptiveLimit(1000, target_s=0.05, target_utilization=0.2)
    assert deep.update(0.0, 100, 1.0) == 50  # never more than half in one cut
    lag_alone = AdaptiveLimit(1000, target_s=0.05)  # target 1: utilization never cuts
    assert lag_alone.update(0.0, 100, 1.0) == 1000
    assert lag_alone.update(0.5, 100, 1.0) == 90  # the lag still does


def test_the_adaptive_limit_backs_off_when_requests_wait_longer_than_its_target() -> None:
    limit = AdaptiveLimit(1000, target_s=0.05, target_wait_s=0.02)
    busy = 0.6  # the loop's utilization, under its target (1 here): only the waits cut
    assert limit.update(0.0, 100, busy, wait_s=0.019) == 1000  # under the target: nothing to do
    assert limit.update(0.0, 100, busy, wait_s=0.021) == 90  # a little over: 90% of those in flight
    for _ in range(10):
        limit.update(0.0, 90, busy, wait_s=0.04)
    assert limit.update(0.0, 90, busy, wait_s=0.03) == 60  # far over: in proportion, 20 / 30 ms of them
    for _ in range(10):
        limit.update(0.0, 60, busy, wait_s=0.5)
    assert limit.update(0.0, 60, busy, wait_s=0.5) == 30  # never more than half in one cut
    assert limit.update(0.0, 30, busy, wait_s=0.01) == 31  # waits under the target again: it probes upwards
    # requests that wait on a loop mostly idle wait for a dependency, not for the loop: no cut
    assert limit.update(0.0, 31, 0.3, wait_s=0.5) == 32
    unwatched = AdaptiveLimit(1000, target_s=0.05)  # target 0: waits never cut
    assert unwatched.update(0.0, 100, busy, wait_s=5.0) == 1000


async def test_the_door_backs_off_on_a_busy_loop_that_keeps_its_timers_on_time() -> None:
    clock = Clock()
    lag = LoopLag(0.05, clock=clock)
    door = Door(100, clock=clock, lag=lag, adaptive=AdaptiveLimit(100, target_s=0.05, target_utilization=0.8))
    assert all(door.admit() for _ in range(50))
    ticks = 0
    while True:  # every turn of the loop busy, none late
        ticks += 1
        lag.tick(clock.now, clock.now, 1.0)
        if lag.busy_now >= 0.97:
            break
        assert door.admit()  # not yet: it moves on averages, not on one tick
        door.leave()
    assert ticks > 3 and lag.utilization < 0.8
    # full for a few ticks, while the long average still climbs: held where it is, nothing more let in
    assert not door.admit() and door.limit == 50
    while lag.utilization <= 0.8:
        lag.tick(clock.now, clock.now, 1.0)
    assert not door.admit() and door.limit < 50  # then cut, the average past its target


async def test_the_door_backs_off_when_requests_wait_on_a_busy_loop_only() -> None:
    clock = Clock()
    lag = LoopLag(0.05, clock=clock)
    door = Door(100, clock=clock, lag=lag, adaptive=AdaptiveLimit(100, target_s=0.05, target_wait_s=0.005))
    assert all(door.admit() for _ in range(50))
    for _ in range(40):  # requests wait 20 ms before their engine call, on a loop mostly idle: a dependency's
        lag.waited(0.020)
        lag.tick(clock.now, clock.now, 0.3)
    assert lag.wait_s > 0.005 and door.admit() and door.limit == 100  # no cut: shedding would not help
    door.leave()
    while lag.utilization <= 0.5:  # the same waits on a loop 60% busy: the loop's own
        lag.waited(0.020)
        lag.tick(clock.now, clock.now, 0.6)
        assert lag.smoothed_s == 0  # no lag, and busy under its utilization target (1: not watched)
    assert not door.admit() and door.limit == 25  # in proportion (5 / 20 ms), at most half in one cut


def test_a_full_loop_holds_the_limit_where_it_is_before_the_average_crosses() -> None:
    limit = AdaptiveLimit(1000, target_s=0.05, target_utilization=0.9)
    assert limit.update(0.0, 300, 0.7, busy_now=0.9) == 1000  # busy, with room: open
    assert limit.update(0.0, 300, 0.3, busy_now=1.0) == 1000  # a burst on a loop mostly idle: open
    assert limit.update(0.0, 300, 0.7, busy_now=0.98) == 300  # full while the average climbs: held
    assert limit.update(0.0, 250, 0.75, busy_now=0.99) == 300  # a hold: it does not follow them down
    assert limit.update(0.0, 250, 0.8, busy_now=0.9) == 1000  # room again: open as before
    assert limit.update(0.0, 400, 0.85, busy_now=0.98) == 400  # full again: held anew
    assert limit.update(0.0, 400, 0.95, busy_now=0.99) == 360  # the average past its target: cut
    assert limit.update(0.0, 300, 0.85, busy_now=0.98) == 300  # later fills hold below the limit cut to
    lag_alone = AdaptiveLimit(1000, target_s=0.05)  # target 1: utilization neither cuts nor holds
    assert lag_alone.update(0.0, 300, 1.0, busy_now=1.0) == 1000


async def test_the_door_moves_its_limit_once_per_tick_of_the_lag() -> None:
    clock = Clock()
    lag = LoopLag(0.05, clock=clock)
    door = Door(10, clock=clock, lag=lag, adaptive=AdaptiveLimit(10, target_s=0.02, floor=2))
    assert all(door.admit() for _ in range(10)) and not door.admit()
    lag.tick(clock.now - 0.3, clock.now)  # a tick 0.3 s late with 10 in flight
    assert not door.admit() and door.limit == 9
    assert not door.admit() and door.limit == 9  # the same tick is not counted twice
    for _ in range(2):
        door.leave()
    assert door.admit() and not door.admit()  # 9 in flight: full again
    assert door.refused["limit"] == 4


async def test_readiness_follows_the_door() -> None:
    replicas = ["http://127.0.0.1:9"]
    settings = gateway_settings(replicas, replicas, server={"max_concurrent_requests": 1})
    state = await GatewayState.create(settings)
    try:
        for replica in (*state.pools["fast"].replicas, *state.pools["deliberate"].replicas):
            replica.healthy = True
        assert state.ready
        assert state.door.admit()
        assert not state.ready  # full: a balancer steers new requests to another replica
        state.door.leave()
        assert state.ready
    finally:
        await state.aclose()
