"""EngineTransport against a real uvicorn server: pooling, streaming, failures, timeouts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from engines import EngineTransport
from engines.transport import _HIGH_WATER, ChunkReader
from tests.servers import serving


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    client_port = str(scope["client"][1]).encode()
    if path == "/echo":
        headers = [(b"content-type", b"application/octet-stream"), (b"x-client-port", client_port)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path == "/chunks":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(5):
            await send({"type": "http.response.body", "body": b"%d;" % index, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/die":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("die mid-body")  # uvicorn drops the connection
    elif path == "/slow":
        await asyncio.sleep(2)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})
    elif path == "/trickle":  # a piece every 20 ms for 200 ms, then silence
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(10):
            await send({"type": "http.response.body", "body": b"%d;" % index, "more_body": True})
            await asyncio.sleep(0.02)
        async with asyncio.timeout(60):  # silence until the client leaves (a server that outlives it would
            await receive()  # hold its shutdown), at most a minute
    elif path == "/burst":  # 1,000 chunks of the chunked encoding, back to back
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(1000):
            await send({"type": "http.response.body", "body": b"%d;" % index, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/big":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(64):
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=EngineTransport(), timeout=5.0) as client:
        yield client


async def test_body_round_trip_and_connection_reuse(client: httpx.AsyncClient, base_url: str) -> None:
    first = await client.post(f"{base_url}/echo", content=b"hello")
    second = await client.post(f"{base_url}/echo", content=b"again" * 1000)
    assert (first.status_code, first.content) == (200, b"hello")
    assert second.content == b"again" * 1000
    assert first.headers["x-client-port"] == second.headers["x-client-port"]  # one keep-alive connection


async def test_concurrent_requests_get_their_own_answers(client: httpx.AsyncClient, base_url: str) -> None:
    bodies = [f"request {index}".encode() for index in range(40)]
    responses = await asyncio.gather(*(client.post(f"{base_url}/echo", content=body) for body in bodies))
    assert [response.content for response in responses] == bodies


async def test_chunked_body_streams_piece_by_piece(client: httpx.AsyncClient, base_url: str) -> None:
    async with client.stream("GET", f"{base_url}/chunks") as response:
        pieces = [piece async for piece in response.aiter_raw()]
    assert b"".join(pieces) == b"0;1;2;3;4;"
    assert len(pieces) >= 3  # not buffered whole


async def test_large_body_with_flow_control(client: httpx.AsyncClient, base_url: str) -> None:
    response = await client.get(f"{base_url}/big")
    assert len(response.content) == 64 * 65536


async def test_a_body_not_read_stops_being_received_past_the_high_water_mark(base_url: str) -> None:
    transport, body = await open_body(base_url, "/big")  # 4 MiB, sent as fast as the socket takes it
    try:
        conn = body._conn
        assert conn is not None
        for _ in range(3000):  # a generous deadline (30 s) for the socket to bring that much
            if conn._paused:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the connection never stopped reading")
        held = sum(len(chunk) for chunk in conn._chunks)
        await asyncio.sleep(0.1)  # paused: nothing more is taken in
        assert held == sum(len(chunk) for chunk in conn._chunks)
        # past the mark (counted with the chunked encoding's framing and the head, so a little less of body),
        # and at most one read (asyncio's) past it
        assert _HIGH_WATER - 1024 < held <= _HIGH_WATER + 256 * 1024
        received = b""
        while (chunk := await body.read(5.0)) is not None:  # reading resumes it
            received += chunk
        assert received == b"x" * 64 * 65536
    finally:
        await body.aclose()
        await transport.aclose()


async def test_server_dying_mid_body_is_a_protocol_error(client: httpx.AsyncClient, base_url: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(f"{base_url}/die")
    assert (await client.post(f"{base_url}/echo", content=b"ok")).content == b"ok"  # the pool recovered


async def test_refused_connection_is_a_connect_error(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_read_timeout(client: httpx.AsyncClient, base_url: str) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.get(f"{base_url}/slow", timeout=httpx.Timeout(5.0, read=0.2))


async def test_closing_a_stream_early_frees_the_pool_slot(base_url: str) -> None:
    async with httpx.AsyncClient(transport=EngineTransport(max_connections_per_origin=1)) as client:
        async with client.stream("GET", f"{base_url}/chunks") as response:
            await anext(response.aiter_raw())
        # with a single connection allowed, this only works if the abandoned one was released
        reply = await client.post(f"{base_url}/echo", content=b"next", timeout=30.0)
    assert reply.content == b"next"


async def open_body(base_url: str, path: str) -> tuple[EngineTransport, ChunkReader]:
    transport = EngineTransport()
    response = await transport.handle_async_request(httpx.Request("GET", base_url + path))
    assert isinstance(response.stream, ChunkReader)
    return transport, response.stream


async def test_a_read_waits_at_most_its_own_deadline_each_time(base_url: str) -> None:
    transport, body = await open_body(base_url, "/trickle")
    received = b""
    try:
        while not received.endswith(b"9;"):  # 200 ms of pieces 20 ms apart: no read waits 150 ms
            chunk = await body.read(0.15)
            assert chunk is not None
            received += chunk
        assert received == b"".join(b"%d;" % index for index in range(10))
        with pytest.raises(httpx.ReadTimeout):  # then silence: this read's deadline passes
            await body.read(0.15)
    finally:
        await body.aclose()
        await transport.aclose()


async def test_a_read_takes_everything_that_has_arrived(base_url: str) -> None:
    transport, body = await open_body(base_url, "/burst")
    pieces = []
    try:
        while (chunk := await body.read(5.0)) is not None:
            pieces.append(chunk)
    finally:
        await transport.aclose()
    assert b"".join(pieces) == b"".join(b"%d;" % index for index in range(1000))
    assert len(pieces) < 500  # joined: not a read per chunk of the chunked encoding
