"""The OpenAI-compatible adapter against scripted engines: timeouts, broken streams, error translation."""

from __future__ import annotations

import asyncio
import errno
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from engines import (
    EngineFailed,
    EngineHTTP,
    EngineOverloaded,
    EngineRejected,
    EngineTimeout,
    EngineTransport,
    EngineUnavailable,
    LocalOverload,
    OpenAICompatEngine,
    StreamTally,
    Timeouts,
)
from engines.simulator import create_simulator_app, profile
from tests.servers import serving


def chunk(
    content: str | None = None, reasoning_content: str | None = None, usage: int | None = None
) -> bytes:
    if usage is not None:
        body: dict[str, object] = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": usage}}
    else:
        delta = {"content": content, "reasoning_content": reasoning_content}
        body = {"choices": [{"index": 0, "delta": {k: v for k, v in delta.items() if v is not None}}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


VLLM_400 = {
    "error": {
        "message": "This model's maximum context length is 2048 tokens. However, you requested 4000 tokens.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
}
OLD_400 = {
    "object": "error",
    "message": "bad temperature",
    "type": "BadRequestError",
    "param": "temperature",
    "code": 400,
}

SCRIPTS: dict[str, tuple[int, list[bytes | float], list[tuple[bytes, bytes]]]] = {
    # path: (status, body parts - bytes are sent, floats are pauses in seconds, headers)
    "/ok": (
        200,
        [
            chunk(reasoning_content="hmm"),
            chunk("Hel"),
            chunk("lo"),
            chunk(usage=2),
            chunk(usage=3),
            b"data: [DONE]\n\n",
        ],
        [],
    ),
    # all in one write, as an engine that outpaces the gateway: [DONE] in the middle of a read, and what
    # follows it ignored
    "/one-write": (
        200,
        [b"".join([chunk("Hel"), chunk("lo"), chunk(usage=2), b"data: [DONE]\n\n", chunk("late")])],
        [],
    ),
    "/one-write-broken": (
        200,
        [chunk("a") + chunk("b") + b"data: {not json\n\n" + chunk("c") + b"data: [DONE]\n\n"],
        [],
    ),
    "/stall": (200, [chunk("a"), 1.5, chunk("b")], []),
    "/slow-start": (200, [1.5, chunk("a")], []),
    "/no-done": (200, [chunk("a"), chunk("b")], []),
    "/error-event": (
        200,
        [chunk("a"), b'data: {"error": {"message": "CUDA out of memory", "code": 500}}\n\n'],
        [],
    ),
    "/garbage": (200, [chunk("a"), b"data: {not json\n\n"], []),
    "/vllm-400": (
        400,
        [orjson.dumps(VLLM_400)],
        [],
    ),
    "/old-400": (
        400,
        [orjson.dumps(OLD_400)],
        [],
    ),
    "/429": (
        429,
        [b'{"error": {"message": "busy", "type": "TooManyRequests", "code": 429}}'],
        [(b"retry-after-ms", b"1500")],
    ),
    "/503": (503, [b"Service Unavailable"], [(b"retry-after", b"7")]),
    "/500": (500, [b"Internal Server Error"], []),
    "/html": (200, [b"<html>oops</html>"], []),
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    status, parts, headers = SCRIPTS[scope["path"]]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for part in parts:
        if isinstance(part, float):
            await asyncio.sleep(part)
        else:
            await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
async def engine(base_url: str) -> AsyncIterator[OpenAICompatEngine]:
    http = EngineHTTP.create()
    yield OpenAICompatEngine(
        base_url, http, Timeouts(connect_s=1, first_token_s=0.5, idle_s=0.3, total_s=0.5)
    )
    await http.aclose()


async def collect(engine: OpenAICompatEngine, path: str) -> list[bytes]:
    stream = await engine.stream(path, b"{}", request_id="r1")
    try:
        return [data async for data, _ in stream]
    finally:
        await stream.aclose()


async def test_stream_events_usage_and_tally(engine: OpenAICompatEngine) -> None:
    stream = await engine.stream("/ok", b"{}", request_id="r1")
    events = [event async for event in stream]
    await stream.aclose()
    assert len(events) == 5  # [DONE] ends the iteration and is not an event
    assert stream.usage is not None and stream.usage.completion_tokens == 3  # the latest usage wins
    assert (
        stream.tally.text() == "Hello" and stream.tally.reasoning_text() == "hmm"
    )  # reasoning_content read too


async def test_a_batch_is_every_event_in_hand_and_counts_its_usage_chunks(engine: OpenAICompatEngine) -> None:
    stream = await engine.stream("/one-write", b"{}", request_id="r1")
    try:
        assert stream.usage_chunks == 0
        events = await stream.batch()
        assert [data for data, _ in events] == [chunk("Hel")[6:-2], chunk("lo")[6:-2], chunk(usage=2)[6:-2]]
        assert events[0][1]["choices"][0]["delta"] == {"content": "Hel"}
        assert stream.usage_chunks == 1 and stream.usage is not None and stream.usage.completion_tokens == 2
        assert stream.tally.text() == "Hello"
        assert await stream.batch() == []  # [DONE] was in hand: the stream has ended, "late" is not read
        assert stream.tally.text() == "Hello"
    finally:
        await stream.aclose()


async def test_an_event_that_breaks_a_batch_is_raised_by_the_next_call(engine: OpenAICompatEngine) -> None:
    stream = await engine.stream("/one-write-broken", b"{}", request_id="r1")
    try:
        assert [payload["choices"][0]["delta"]["content"] for _, payload in await stream.batch()] == [
            "a",
            "b",
        ]
        with pytest.raises(EngineFailed, match="not JSON"):
            await stream.batch()
        assert stream.tally.text() == "ab"
    finally:
        await stream.aclose()


@pytest.mark.parametrize(
    ("path", "error", "phase"),
    [
        ("/stall", EngineTimeout, "idle"),
        ("/no-done", EngineFailed, None),
        ("/error-event", EngineFailed, None),
        ("/garbage", EngineFailed, None),
    ],
)
async def test_broken_streams_raise_after_the_first_event(
    engine: OpenAICompatEngine, path: str, error: type[Exception], phase: str | None
) -> None:
    stream = await engine.stream(path, b"{}", request_id="r1")
    data, _ = await anext(stream)
    assert b'"a"' in data
    with pytest.raises(error) as caught:
        async for _ in stream:
            pass
    await stream.aclose()
    if phase is not None:
        assert isinstance(caught.value, EngineTimeout) and caught.value.phase == phase
    assert "CUDA" in str(caught.value) or path != "/error-event"


async def test_first_token_timeout(engine: OpenAICompatEngine) -> None:
    with pytest.raises(EngineTimeout) as caught:
        await engine.stream("/slow-start", b"{}", request_id="r1")
    assert caught.value.phase == "first_token"


async def test_vllm_errors_are_translated(engine: OpenAICompatEngine) -> None:
    with pytest.raises(EngineRejected) as rejected:
        await engine.complete("/vllm-400", b"{}", request_id="r1")
    assert rejected.value.code == "context_length_exceeded" and rejected.value.status == 400
    assert rejected.value.error_type == "invalid_request_error"
    with pytest.raises(EngineRejected) as old:
        await engine.stream("/old-400", b"{}", request_id="r1")
    assert (
        old.value.param == "temperature"
        and old.value.message == "bad temperature"
        and old.value.code == "invalid_value"  # a string, always: the engine named the parameter
    )
    with pytest.raises(EngineOverloaded) as busy:
        await engine.complete("/429", b"{}", request_id="r1")
    assert busy.value.retry_after_s == pytest.approx(1.5)
    with pytest.raises(EngineOverloaded) as unavailable:
        await engine.complete("/503", b"{}", request_id="r1")
    assert unavailable.value.retry_after_s == 7.0
    with pytest.raises(EngineFailed) as failed:
        await engine.complete("/500", b"{}", request_id="r1")
    assert failed.value.status == 500
    with pytest.raises(EngineFailed):
        await engine.complete("/html", b"{}", request_id="r1")


async def test_unreachable_engine() -> None:
    http = EngineHTTP.create()
    engine = OpenAICompatEngine("http://127.0.0.1:9", http, Timeouts())
    with pytest.raises(EngineUnavailable):
        await engine.complete("/v1/chat/completions", b"{}", request_id="r1")
    assert not await engine.health()
    await http.aclose()


@pytest.mark.parametrize("number", [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS])
async def test_a_shortage_of_this_process_is_not_an_unreachable_engine(number: int) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        # what EngineTransport and httpx's own transport raise when the socket cannot be made
        raise httpx.ConnectError("cannot connect", request=request) from OSError(number, "short")

    http = EngineHTTP.create(httpx.MockTransport(handler))
    engine = OpenAICompatEngine("http://engine:8000", http, Timeouts())
    with pytest.raises(LocalOverload):
        await engine.complete("/v1/chat/completions", b"{}", request_id="r1")
    with pytest.raises(LocalOverload):
        await engine.stream("/v1/chat/completions", b"{}", request_id="r1")
    with pytest.raises(LocalOverload):
        await engine.health()  # not "unhealthy": the check could not be made
    await http.aclose()


class ShortMidStream(httpx.AsyncByteStream):
    def __init__(self, number: int) -> None:
        self._number = number

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield chunk("a")
        raise httpx.ReadError("cannot read") from OSError(self._number, "short")


@pytest.mark.parametrize("number", [errno.ENOMEM, errno.ENOBUFS])
async def test_a_shortage_mid_stream_is_ours_too(number: int) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=ShortMidStream(number))

    http = EngineHTTP.create(httpx.MockTransport(handler))
    engine = OpenAICompatEngine("http://engine:8000", http, Timeouts())
    stream = await engine.stream("/v1/chat/completions", b"{}", request_id="r1")
    with pytest.raises(LocalOverload):
        [event async for event in stream]
    await stream.aclose()
    await http.aclose()


async def test_no_free_connection_of_our_own_is_a_local_overload(base_url: str) -> None:
    http = EngineHTTP.create(EngineTransport(max_connections_per_origin=1))
    engine = OpenAICompatEngine(base_url, http, Timeouts(connect_s=0.05, first_token_s=5, total_s=5))
    stream = await engine.stream("/stall", b"{}", request_id="r1")  # holds the only connection
    try:
        with pytest.raises(LocalOverload):
            await engine.complete("/ok", b"{}", request_id="r2")
    finally:
        await stream.aclose()
        await http.aclose()


EXHAUST = """
import asyncio, gc, json, resource, sys
import uvloop
from engines import EngineHTTP, EnginePool, OpenAICompatEngine, PoolPolicy, Timeouts

BODY = b'{"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}'

async def main(urls):
    warm = EngineHTTP.create()  # imports everything a call needs while files can still be opened
    await OpenAICompatEngine(urls[0], warm, Timeouts()).complete("/v1/chat/completions", BODY, request_id="w")
    await warm.aclose()
    http = EngineHTTP.create()
    shortages = []
    pool = EnginePool(
        "p", [OpenAICompatEngine(url, http, Timeouts()) for url in urls],
        PoolPolicy(eject_after_failures=1), on_local_overload=lambda: shortages.append(1),
    )
    await pool.check_health()
    await http.transport.aclose()  # no idle connection left: every call must open one
    await asyncio.sleep(0.1)  # closed transports let go of their sockets on a later turn of the loop
    gc.collect()  # as would a socket in a reference cycle
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    held = []
    try:
        while True:
            held.append(open("/dev/null"))
    except OSError as exc:
        exhausted = exc.errno
    errors = []
    for _ in range(4):
        try:
            await pool.complete("/v1/chat/completions", BODY, request_id="r")
        except Exception as exc:
            errors.append(type(exc).__name__)
    await pool.check_health()
    during = [[r.healthy, r.failures, r.ejected_until] for r in pool.replicas]
    for file in held:
        file.close()
    reply = await pool.complete("/v1/chat/completions", BODY, request_id="r")
    await http.aclose()
    print(json.dumps({"exhausted": exhausted, "errors": errors, "during": during, "shortages": len(shortages),
                      "served": reply.replica in urls}))

(uvloop.run if sys.argv[1] == "uvloop" else asyncio.run)(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_real_descriptor_shortage_ejects_no_replica(loop: str) -> None:
    engine = profile("fast", zero_latency=True)
    with serving(create_simulator_app(engine)) as a, serving(create_simulator_app(engine)) as b:
        done = subprocess.run(
            [sys.executable, "-c", EXHAUST, loop, a, b],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).parents[2],
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["exhausted"] == errno.EMFILE
    assert result["errors"] == ["LocalOverload"] * 4
    assert result["during"] == [[True, 0, 0.0], [True, 0, 0.0]]  # healthy, no failure, not ejected
    assert result["shortages"] == 4 + 2  # four calls, two health checks
    assert result["served"]


def test_tally_counts_each_choice_and_legacy_text() -> None:
    tally = StreamTally()
    tally.observe(
        {"choices": [{"index": 0, "delta": {"reasoning": "a"}}, {"index": 1, "delta": {"content": "x"}}]}
    )
    tally.observe({"choices": [{"index": 1, "delta": {"content": "y"}, "finish_reason": "stop"}]})
    tally.observe({"choices": [{"index": 2, "text": "legacy"}]})
    assert (tally.reasoning_text(0), tally.text(1), tally.text(2)) == ("a", "xy", "legacy")
    assert tally.finish_reasons == {1: "stop"}
    assert (tally.content_deltas, tally.reasoning_deltas) == (3, 1)


async def test_request_carries_id_and_key(base_url: str) -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
        )

    http = EngineHTTP.create(httpx.MockTransport(handler))
    engine = OpenAICompatEngine("http://engine:8000/", http, Timeouts(), api_key="k3y")
    reply = await engine.complete("/v1/chat/completions", b'{"model": "m"}', request_id="req_7")
    await http.aclose()
    assert reply.usage is not None and reply.usage.total_tokens == 3
    request = seen[0]
    assert str(request.url) == "http://engine:8000/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer k3y" and request.headers["x-request-id"] == "req_7"
    assert request.content == b'{"model": "m"}'
