"""Client connections over real sockets: a request's headers and body must arrive within their deadlines, and
a worker holds a bounded number of connections; a normal request is served meanwhile."""

from __future__ import annotations

import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx
import openai
import orjson
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from engines.simulator import profile
from gateway import create_app
from gateway.http.connections import GatewayProtocol
from tests.chat import MESSAGES
from tests.conftest import FAST, StartEngine, gateway_settings, wait_ready
from tests.processes import TIERGATE, free_port, wait_http
from tests.prometheus import metric
from tests.servers import serving

CHAT = {"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
WAIT_S = 20.0  # generous: what the deadlines below are checked against is only that they end at all


@contextmanager
def gateway(start_engine: StartEngine, **server: Any) -> Iterator[str]:
    engine = start_engine(FAST)
    limits = {"header_timeout_s": 0.5, "body_timeout_s": 1.0, **server}
    app = create_app(gateway_settings([engine], [engine], server=limits))
    # keep-alive connections stay open while a test holds them
    with serving(app, http=GatewayProtocol, timeout_keep_alive=300) as url:
        wait_ready(url)
        yield url


Connect = Callable[[str], socket.socket]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Open a raw connection to a URL's host and port; closed after the test."""
    opened: list[socket.socket] = []

    def open_one(url: str) -> socket.socket:
        parts = urlsplit(url)
        sock = socket.create_connection((parts.hostname, parts.port))
        sock.settimeout(WAIT_S)
        opened.append(sock)
        return sock

    yield open_one
    for sock in opened:
        sock.close()


def until_closed(sock: socket.socket, piece: bytes = b"") -> bytes:
    """What the server sends until it closes the connection, `piece` sent every 50 ms meanwhile (a client that
    never stops trickling); an AssertionError if it is still open after WAIT_S."""
    received = b""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            if piece:
                sock.sendall(piece)
            if select.select([sock], [], [], 0.05)[0]:
                data = sock.recv(65536)
                if not data:
                    return received
                received += data
        except (BrokenPipeError, ConnectionResetError):  # closed with our trickle unread: a reset
            return received
    raise AssertionError(f"the connection was still open after {WAIT_S} s")


def assert_timed_out(answer: bytes, part: str) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"connection: close" in head.lower()
    error = orjson.loads(body)["error"]
    assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
    assert part in error["message"]


def served(url: str) -> bool:
    try:
        return httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=WAIT_S).status_code == 200
    except httpx.TransportError:  # refused at the door of a worker with no connection to spare
        return False


def test_headers_that_do_not_arrive_in_time_end_the_connection(
    start_engine: StartEngine, connect: Connect
) -> None:
    with gateway(start_engine) as url:
        silent, stalled, trickling = connect(url), connect(url), connect(url)
        stalled.sendall(HEAD)  # then nothing
        trickling.sendall(HEAD)
        assert served(url)  # meanwhile, on another connection
        assert_timed_out(until_closed(stalled), "headers")
        assert until_closed(silent) == b""  # connected, never said a word: closed without an answer
        until_closed(trickling, b"x-more: and more\r\n")  # a header a line at a time, for ever
        assert served(url)


def test_a_body_that_does_not_arrive_in_time_gets_408(start_engine: StartEngine, connect: Connect) -> None:
    with gateway(start_engine) as url:
        stalled, endless = connect(url), connect(url)
        stalled.sendall(HEAD + b"content-length: 1000\r\n\r\n" + b'{"model": ')  # then nothing
        endless.sendall(HEAD + b"transfer-encoding: chunked\r\n\r\n")
        assert served(url)
        assert_timed_out(until_closed(stalled), "body")
        answer = until_closed(endless, b"1\r\n \r\n")  # a chunked body that never ends
        if answer:  # else the close came as a reset, our unread chunks in the server's buffer
            assert_timed_out(answer, "body")
        assert served(url)


@pytest.mark.parametrize(
    "garbage",
    [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nbad header line\r\n\r\n", b"POST / HTTP/9.9\r\n\r\n"],
)
def test_malformed_http_gets_an_openai_error(
    start_engine: StartEngine, connect: Connect, garbage: bytes
) -> None:
    with gateway(start_engine) as url:
        sock = connect(url)
        sock.sendall(garbage)
        head, _, body = until_closed(sock).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), head
        assert b"content-type: application/json" in head.lower() and b"connection: close" in head.lower()
        error = orjson.loads(body)["error"]
        assert (error["code"], error["type"]) == ("invalid_http_request", "invalid_request_error")
        assert served(url)


def test_a_worker_closes_connections_beyond_its_bound_at_once(
    start_engine: StartEngine, connect: Connect
) -> None:
    with gateway(start_engine, max_connections=4, header_timeout_s=300) as url:
        held = [connect(url) for _ in range(4)]
        for sock in held:  # each served once, and kept alive: the worker counts them
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert until_closed(connect(url)) == b""
        held.pop().close()
        deadline = time.monotonic() + WAIT_S
        while not served(url):  # once the worker has seen the close
            assert time.monotonic() < deadline, "no connection was ever served again"
            time.sleep(0.05)


def test_tiergate_serve_applies_the_deadlines(
    tmp_path: Path, processes: list[subprocess.Popen[str]], connect: Connect
) -> None:
    port = free_port()
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        f"server: {{port: {port}, header_timeout_s: 0.5}}\nauth: {{mode: disabled}}\n"
        "pools: {fast: {replicas: ['http://127.0.0.1:9']}}\nmodels: {m: {tiers: {fast: {pool: fast}}}}\n"
    )
    gateway = subprocess.Popen(
        [*TIERGATE, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    processes.append(gateway)
    wait_http(f"http://127.0.0.1:{port}/healthz", gateway)
    stalled = connect(f"http://127.0.0.1:{port}")
    stalled.sendall(HEAD)
    assert_timed_out(until_closed(stalled), "headers")


class Counting:
    """The gateway's app, counting the chat completions that reach it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.chats = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
            self.chats += 1
        await self.app(scope, receive, send)


def read_response(reader: BinaryIO) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One response of a kept-alive connection: its status line, headers and body (by its content-length)."""
    status = reader.readline().rstrip()
    headers = {}
    while line := reader.readline().rstrip():
        name, _, value = line.partition(b": ")
        headers[name.lower()] = value
    return status, headers, reader.read(int(headers[b"content-length"]))


def assert_turned_away(status: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
    assert status == b"HTTP/1.1 503 Service Unavailable", (status, body)
    error = orjson.loads(body)["error"]
    assert error["code"] == "gateway_overloaded" and error["type"] == "server_error", error
    assert int(headers[b"retry-after"]) >= 1 and headers[b"content-type"] == b"application/json"
    assert headers[b"x-tiergate-request-id"].startswith(b"req_") and b"connection" not in headers


def test_a_shut_door_turns_a_request_away_as_its_headers_arrive(
    start_engine: StartEngine, connect: Connect
) -> None:
    slow = start_engine(profile("fast", ttft_base_s=0.002, itl_s=0.05, output_tokens_range=(400, 400)))
    server = {
        "max_concurrent_requests": 1,
        "concurrency": "fixed",
        "header_timeout_s": 5,
        "body_timeout_s": 5,
    }
    app = Counting(create_app(gateway_settings([slow], [slow], server=server)))
    with serving(app, http=GatewayProtocol, timeout_keep_alive=300) as url:
        wait_ready(url)
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        holding = client.chat.completions.create(model="qwen3-8b", messages=MESSAGES, stream=True)
        try:
            next(iter(holding))  # the door's one place is taken for about 20 s
            body = orjson.dumps(CHAT)
            request = HEAD + b"content-length: %d\r\n" % len(body)
            sock = connect(url)
            reader = sock.makefile("rb")
            sock.sendall(request + b"x-request-id: mine-1\r\n\r\n")  # its headers, and no body yet
            status, headers, answer = read_response(reader)
            assert_turned_away(status, headers, answer)
            assert headers[b"x-request-id"] == b"mine-1"  # the client's own id, as the app would return it
            # its body, dropped; then another request and a probe in one write (pipelined), on the same
            # connection: both answered in order
            sock.sendall(body + request + b"\r\n" + body + b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n")
            assert_turned_away(*read_response(reader))
            status, _, answer = read_response(reader)
            assert status == b"HTTP/1.1 200 OK" and orjson.loads(answer)["status"] == "ok", answer
            assert app.chats == 1  # neither refusal reached the app: only the stream that holds the door
            # a request that closes its connection is the app's to refuse (and the connection then closes)
            closing = connect(url)
            closing.sendall(request + b"connection: close\r\n\r\n" + body)
            head, _, answer = until_closed(closing).partition(b"\r\n\r\n")
            assert (
                head.startswith(b"HTTP/1.1 503")
                and orjson.loads(answer)["error"]["code"] == "gateway_overloaded"
            )
            assert app.chats == 2
            refused = metric(httpx.get(url + "/metrics").text, "tiergate_door_refusals_total", reason="limit")
            assert refused == 3  # each refusal counted once, wherever it was answered
        finally:
            holding.close()
