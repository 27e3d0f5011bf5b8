"""A lean HTTP/1.1 transport for httpx, built on asyncio protocols and the httptools parser.

Why it exists: httpx's default transport (httpcore + h11, pure Python) costs several times the
gateway's own CPU per request (docs/benchmarks.md) and degrades with concurrency, while the gateway calls
engines thousands of times a second. This transport keeps httpx's client, its exceptions and its
timeouts (the seam that tests swap), and does the wire work with httptools, the C parser uvicorn uses.

Scope, on purpose: HTTP/1.1 to engines, keep-alive pooling per origin, plain TCP or TLS, request
bodies sent whole (engine requests are small), response bodies streamed with flow control. Not for
HEAD requests (the parser cannot know such a response has no body).

A response body is read as whatever has arrived since the last read, joined (`ChunkReader.read`): an engine
that streams faster than the gateway reads costs one read, not one per chunk of its chunked encoding. A read
that must wait is bounded by one deadline timer per connection, re-armed only when it fires (not one timeout
object per read: a token-paced stream waits once per token).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import httptools
import httpx

__all__ = ["ChunkReader", "EngineTransport"]

_HIGH_WATER = 64 * 1024  # buffered body bytes before the socket stops being read (per stream: its memory)
_Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One TCP connection; carries one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser: httptools.HttpResponseParser | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_ready: asyncio.Future[int] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[bool] | None = None  # its result: whether the read timed out
        self._got_bytes = False
        self.complete = False
        self._keep_alive = False
        self._error: httpx.TransportError | None = None
        self._request: httpx.Request | None = None
        self._deadline = 0.0  # loop time the pending read gives up (0: no read waits with a deadline)
        self._timer: asyncio.TimerHandle | None = None  # fires at (or before) `_deadline`

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports don't subclass it

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # bytes while idle: the server broke the protocol
            self._fail(httpx.RemoteProtocolError("unexpected data on an idle connection"))
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade", request=self._request))
            return
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response: {exc}", request=self._request))
            return
        if self._chunks:  # body bytes arrived (what on_body did not do, once per read rather than per chunk)
            self._buffered += len(data)  # their framing too: a bound on memory needs no more precision
            if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser is not None and not self.complete:
            message = "server disconnected before the response was complete"
            self._fail(httpx.RemoteProtocolError(message, request=self._request))

    # -- httptools callbacks ----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        if self._headers_ready is not None and not self._headers_ready.done():
            self._headers_ready.set_result(self._parser.get_status_code())

    @property
    def on_body(self) -> Callable[[bytes], None]:
        """The parser's body callback, which it looks up once: the buffer's own `append`, with no Python frame
        for each chunk of the body (an engine's stream makes one of every event); data_received does the
        rest once per read."""
        return self._chunks.append

    def on_message_complete(self) -> None:
        assert self._parser is not None
        self._keep_alive = self._parser.should_keep_alive()  # the parser forgets it right after this call
        self.complete = True
        self._wake()

    # -- used by the transport ---------------------------------------------------------------------
    def start(self, request: httpx.Request, wire: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self._request = request
        self._parser = httptools.HttpResponseParser(self)
        self._headers = []
        self._chunks.clear()
        self._buffered = 0
        self._got_bytes = False
        self.complete = False
        self._keep_alive = False
        self._error = None
        self._headers_ready = asyncio.get_running_loop().create_future()
        self.transport.write(wire)
        return self._headers_ready

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self._headers

    @property
    def received_nothing(self) -> bool:
        return not self._got_bytes

    @property
    def reusable(self) -> bool:
        return not self.closed and self.complete and self._keep_alive

    async def next_chunk(self, wait_s: float | None) -> bytes | None:
        """What has arrived of the body since the last read, joined; None at the end of the body. Waits at
        most `wait_s` for it (None: no limit) and then raises `httpx.ReadTimeout`."""
        while True:
            chunks = self._chunks
            if chunks:
                chunk = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self._error is not None:
                raise self._error
            if self.complete:
                return None
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            if wait_s is not None:
                deadline = self._deadline = loop.time() + wait_s
                timer = self._timer
                if timer is None or timer.when() > deadline:  # else it fires earlier and re-arms for this one
                    if timer is not None:
                        timer.cancel()
                    self._timer = loop.call_at(deadline, self._expire)
            try:
                await waiter
            finally:
                self._waiter = None
                self._deadline = 0.0
            if waiter.result():
                raise httpx.ReadTimeout("timed out waiting for the response body", request=self._request)

    def _expire(self) -> None:
        """The deadline timer: a waiting read past its deadline times out; a later deadline re-arms it."""
        self._timer = None
        deadline, waiter = self._deadline, self._waiter
        if not deadline or waiter is None or waiter.done():
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            waiter.set_result(True)  # timed out
        else:
            self._timer = loop.call_at(deadline, self._expire)

    def done(self) -> None:
        """The response is finished with; the connection goes idle."""
        self._parser = None
        self._request = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(False)

    def _fail(self, error: httpx.TransportError) -> None:
        self._error = error
        if self._headers_ready is not None and not self._headers_ready.done():
            self._headers_ready.set_exception(error)
        self._wake()
        if self.transport is not None:
            self.transport.close()


class _OriginPool:
    """Keep-alive connections to one origin, at most `limit` at a time."""

    def __init__(self, origin: _Origin, limit: int, ssl_context: ssl.SSLContext | None) -> None:
        self._origin = origin
        self._limit = limit
        self._ssl = ssl_context
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(
        self, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> tuple[_Connection, bool]:
        while True:
            while self._idle:
                conn = self._idle.pop()  # most recently used first: the least likely to have timed out
                if not conn.closed:
                    return conn, True
                self._open -= 1
            if self._open < self._limit:
                self._open += 1
                try:
                    return await self._connect(request, timeouts.get("connect")), False
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await waiter
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection to the engine", request=request) from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def release(self, conn: _Connection) -> None:
        if conn.reusable:
            conn.done()
            self._idle.append(conn)
        else:
            conn.done()
            conn.close()
            self._open -= 1
        self._wake_one()

    def discard(self, conn: _Connection) -> None:
        conn.done()
        conn.close()
        self._open -= 1
        self._wake_one()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self, request: httpx.Request, wait_s: float | None) -> _Connection:
        scheme, host, port = self._origin
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(wait_s):
                _, conn = await loop.create_connection(
                    _Connection,
                    host,
                    port,
                    ssl=self._ssl if scheme == "https" else None,
                    server_hostname=host if scheme == "https" else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}", request=request) from exc
        return conn


class ChunkReader(httpx.AsyncByteStream):
    """A response body of this transport. Iterate it as httpx does, or `read()` it: what has arrived since the
    last read, joined, at most `wait_s` waited for (then `httpx.ReadTimeout`); None at its end."""

    def __init__(self, pool: _OriginPool, conn: _Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._timeout = read_timeout

    async def read(self, wait_s: float | None) -> bytes | None:
        chunk = await self.reads()(wait_s)
        if chunk is None:
            await self.aclose()
        return chunk

    def reads(self) -> Callable[[float | None], Awaitable[bytes | None]]:
        """`read` without its end: a reader that awaits it directly (one coroutine less for every chunk of a
        stream, which a token-paced stream pays per token) closes the body itself once it returns None."""
        if self._conn is None:
            raise httpx.StreamClosed()
        return self._conn.next_chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self.read(self._timeout)) is not None:
            yield chunk

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)  # closes it unless the whole body was read


class EngineTransport(httpx.AsyncBaseTransport):
    """httpx transport with per-origin keep-alive pools; see the module docstring."""

    def __init__(self, *, max_connections_per_origin: int = 512, ssl_context: ssl.SSLContext | None = None):
        self._limit = max_connections_per_origin
        self._ssl = ssl_context
        self._pools: dict[_Origin, _OriginPool] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}", request=request)
        origin = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        pool = self._pools.get(origin)
        if pool is None:
            ssl_context = self._ssl if self._ssl is not None else _default_ssl(scheme)
            pool = self._pools[origin] = _OriginPool(origin, self._limit, ssl_context)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        wire = _encode(request, await request.aread())
        for attempt in (1, 2):
            conn, reused = await pool.acquire(request, timeouts)
            try:
                async with asyncio.timeout(timeouts.get("read")):
                    status = await conn.start(request, wire)
            except httpx.TransportError as exc:
                pool.discard(conn)
                if reused and attempt == 1 and conn.received_nothing:
                    continue  # the server closed an idle keep-alive connection as we wrote to it
                raise exc
            except TimeoutError:
                pool.discard(conn)
                raise httpx.ReadTimeout("timed out waiting for the response", request=request) from None
            except BaseException:
                pool.discard(conn)
                raise
            return httpx.Response(
                status,
                headers=conn.headers,
                stream=ChunkReader(pool, conn, timeouts.get("read")),
                extensions={"http_version": b"HTTP/1.1"},
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _encode(request: httpx.Request, body: bytes) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    has_length = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            continue  # the body is sent whole with a content-length
        if lowered == b"content-length":
            has_length = True
        lines.append(name + b": " + value)
    if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
        lines.append(b"content-length: %d" % len(body))
    lines.append(b"")
    lines.append(body)
    return b"\r\n".join(lines)


def _default_ssl(scheme: str) -> ssl.SSLContext | None:
    return ssl.create_default_context() if scheme == "https" else None
