"""EnginePool with small fake replicas: failover, ejection, cool-down, outstanding counts, health."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from engines import (
    EngineFailed,
    EnginePool,
    EngineRejected,
    EngineReply,
    EngineUnavailable,
    LocalOverload,
    NoReplicaAvailable,
    PoolPolicy,
    StreamEvent,
    StreamTally,
    Usage,
)


class FakeStream:
    def __init__(self, replica: str, events: int) -> None:
        self.replica = replica
        self.usage: Usage | None = None
        self.usage_chunks = 0
        self.tally = StreamTally()
        self._left = events
        self.closed = False

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._left == 0:
            raise StopAsyncIteration
        self._left -= 1
        return b"{}", {}

    async def batch(self) -> list[StreamEvent]:
        events: list[StreamEvent] = [(b"{}", {})] * self._left
        self._left = 0
        return events

    async def aclose(self) -> None:
        self.closed = True


class FakeEngine:
    """Answers, or raises the errors it was given, one per call."""

    def __init__(self, url: str, errors: list[Exception] | None = None, healthy: bool = True) -> None:
        self.url = url
        self.errors = list(errors or [])
        self.calls = 0
        self.healthy = healthy
        self.health_error: Exception | None = None

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

    async def complete(
        self, path: str, payload: bytes, *, request_id: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> EngineReply:
        self._maybe_fail()
        return EngineReply({"replica": self.url}, Usage(1, 1), self.url)

    async def stream(
        self, path: str, payload: bytes, *, request_id: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> FakeStream:
        self._maybe_fail()
        return FakeStream(self.url, 2)

    async def health(self) -> bool:
        if self.health_error is not None:
            raise self.health_error
        return self.healthy

    async def metrics_text(self) -> str | None:
        return None

    async def count_tokens(
        self,
        model: str,
        *,
        prompt: str | None = None,
        messages: Any = None,
        template: Mapping[str, Any] | None = None,
    ) -> int | None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def down(url: str) -> EngineUnavailable:
    return EngineUnavailable("connection refused", replica=url)


async def test_fails_over_to_another_replica() -> None:
    a, b = FakeEngine("a", [down("a")]), FakeEngine("b")
    pool = EnginePool("fast", [a, b])
    reply = await pool.complete("/v1/chat/completions", b"{}", request_id="r")
    assert (a.calls, b.calls) == (1, 1)  # the first turn starts at replica a
    assert reply.replica == "b"
    assert pool.replicas[0].failures == 1
    assert all(replica.outstanding == 0 for replica in pool.replicas)


async def test_gives_up_after_every_replica_failed() -> None:
    engines = [FakeEngine(name, [down(name)] * 5) for name in "abc"]
    pool = EnginePool("fast", engines, PoolPolicy(max_attempts=2))
    with pytest.raises(EngineUnavailable):
        await pool.complete("/x", b"{}", request_id="r")
    assert sum(engine.calls for engine in engines) == 2  # max_attempts bounds the tries


async def test_client_errors_are_not_retried_nor_held_against_the_replica() -> None:
    rejected = EngineRejected("too long", replica="a", status=400, code="context_length_exceeded")
    a, b = FakeEngine("a", [rejected]), FakeEngine("b", [rejected])
    pool = EnginePool("fast", [a, b], PoolPolicy(eject_after_failures=1))
    with pytest.raises(EngineRejected):
        await pool.complete("/x", b"{}", request_id="r")
    assert a.calls + b.calls == 1
    assert all(replica.failures == 0 and replica.ejected_until == 0 for replica in pool.replicas)


async def test_ejects_after_consecutive_failures_and_returns_after_cooldown() -> None:
    clock = Clock()
    flaky, steady = FakeEngine("flaky", [down("flaky")] * 2), FakeEngine("steady")
    pool = EnginePool("fast", [flaky, steady], PoolPolicy(eject_after_failures=2, cooldown_s=10), clock=clock)
    for _ in range(4):
        await pool.complete("/x", b"{}", request_id="r")
    assert flaky.calls == 2 and pool.replicas[0].ejected_until == pytest.approx(110.0)
    for _ in range(5):
        await pool.complete("/x", b"{}", request_id="r")
    assert flaky.calls == 2  # ejected: no traffic during the cool-down
    clock.now = 111.0
    for _ in range(4):
        await pool.complete("/x", b"{}", request_id="r")
    assert flaky.calls > 2 and pool.replicas[0].failures == 0  # back, and its success closed the circuit


async def test_no_routable_replica_says_when_to_retry() -> None:
    clock = Clock()
    pool = EnginePool(
        "fast", [FakeEngine("a", [down("a")])], PoolPolicy(eject_after_failures=1, cooldown_s=7), clock=clock
    )
    with pytest.raises(EngineUnavailable):
        await pool.complete("/x", b"{}", request_id="r")
    with pytest.raises(NoReplicaAvailable) as caught:
        await pool.complete("/x", b"{}", request_id="r")
    assert caught.value.retry_after_s == pytest.approx(7.0)


async def test_least_outstanding_counts_open_streams() -> None:
    a, b = FakeEngine("a"), FakeEngine("b")
    pool = EnginePool("fast", [a, b])
    first = await pool.stream("/x", b"{}", request_id="1")
    second = await pool.stream("/x", b"{}", request_id="2")
    assert {first.replica.url, second.replica.url} == {"a", "b"}  # the busy one was avoided
    assert [replica.outstanding for replica in pool.replicas] == [1, 1]
    assert [event async for event in first] == [(b"{}", {}), (b"{}", {})]
    await first.aclose()
    await first.aclose()  # idempotent
    await second.aclose()
    assert [replica.outstanding for replica in pool.replicas] == [0, 0]


async def test_a_request_stopped_before_its_end_is_an_abort() -> None:
    """vLLM counts no abort: the pool reports each request the gateway stops before the engine finished it."""
    aborts: list[tuple[str, str]] = []

    class Slow(FakeEngine):
        async def complete(
            self, path: str, payload: bytes, *, request_id: str, headers: Sequence[tuple[bytes, bytes]] = ()
        ) -> EngineReply:
            await asyncio.sleep(3600)
            raise AssertionError("cancelled before")

    pool = EnginePool("fast", [FakeEngine("a")], on_abort=lambda pool, url: aborts.append((pool, url)))
    whole = await pool.stream("/x", b"{}", request_id="1")
    assert len([event async for event in whole]) == 2
    await whole.aclose()
    assert aborts == []  # read to its end: the engine finished it
    cut = await pool.stream("/x", b"{}", request_id="2")
    await anext(cut)
    await cut.aclose()  # one event of two read: the engine aborts the rest
    assert aborts == [("fast", "a")]
    slow = EnginePool("deliberate", [Slow("b")], on_abort=lambda pool, url: aborts.append((pool, url)))
    call = asyncio.create_task(slow.complete("/x", b"{}", request_id="3"))
    await asyncio.sleep(0.01)
    call.cancel()  # a client that left while the engine worked on its request
    with pytest.raises(asyncio.CancelledError):
        await call
    assert aborts == [("fast", "a"), ("deliberate", "b")]
    failing = EnginePool("fast", [FakeEngine("c", [down("c")])], on_abort=lambda p, u: aborts.append((p, u)))
    with pytest.raises(EngineUnavailable):
        await failing.complete("/x", b"{}", request_id="4")
    assert len(aborts) == 2  # an engine's failure is no abort


async def test_stream_failover_happens_before_the_first_event() -> None:
    a, b = FakeEngine("a", [EngineFailed("boom", replica="a")]), FakeEngine("b")
    pool = EnginePool("fast", [a, b])
    stream = await pool.stream("/x", b"{}", request_id="r")
    assert stream.replica.url == "b"
    await stream.aclose()
    assert (a.calls, b.calls) == (1, 1)
    assert [replica.outstanding for replica in pool.replicas] == [0, 0]


async def test_health_checks_decide_readiness() -> None:
    a, b = FakeEngine("a", healthy=False), FakeEngine("b", healthy=False)
    pool = EnginePool("fast", [a, b])
    assert not pool.ready  # nothing checked yet
    await pool.check_health()
    assert not pool.ready
    with pytest.raises(NoReplicaAvailable):
        await pool.complete("/x", b"{}", request_id="r")
    b.healthy = True
    await pool.check_health()
    assert pool.ready
    assert (await pool.complete("/x", b"{}", request_id="r")).replica == "b"


def short(url: str) -> LocalOverload:
    return LocalOverload("cannot reach the engine: [Errno 24] Too many open files", replica=url)


async def test_a_shortage_of_the_gateways_own_is_held_against_no_replica() -> None:
    a, b = FakeEngine("a", [short("a")] * 2), FakeEngine("b", [short("b")] * 2)
    shortages: list[None] = []
    pool = EnginePool(
        "fast", [a, b], PoolPolicy(eject_after_failures=1), on_local_overload=lambda: shortages.append(None)
    )
    for _ in range(4):
        with pytest.raises(LocalOverload):
            await pool.complete("/x", b"{}", request_id="r")
    assert a.calls + b.calls == 4  # no failover: another replica would meet the same shortage
    assert len(shortages) == 4  # the gateway is told, to shed load at its door
    assert all(replica.failures == 0 and replica.ejected_until == 0 for replica in pool.replicas)
    assert (await pool.complete("/x", b"{}", request_id="r")).replica in ("a", "b")


async def test_a_health_check_the_gateway_could_not_make_leaves_the_replica_as_it_was() -> None:
    a = FakeEngine("a")
    shortages: list[None] = []
    pool = EnginePool("fast", [a], on_local_overload=lambda: shortages.append(None))
    await pool.check_health()
    assert pool.ready
    a.health_error = short("a")
    await pool.check_health()
    assert pool.ready and pool.replicas[0].healthy is True
    assert len(shortages) == 1
    a.health_error, a.healthy = None, False
    await pool.check_health()
    assert not pool.ready  # a check that was made still counts
