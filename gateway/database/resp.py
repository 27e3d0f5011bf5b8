"""A lean Redis client for the gateway's hot-path scripts: one connection, every command pipelined.

Why it exists: redis-py's asyncio client costs about 0.15 ms of CPU per command (a pool checkout, a retry
wrapper, a timeout, stream readers and writers), and a request with limits and budgets in Redis sends two
scripts on its way in and its share of the settlements on its way out: that was most of the "shared"
configuration's cost (docs/benchmarks.md). Here a command is one `hiredis.pack_command`, one write on an
`asyncio.Protocol` and a future; replies, parsed by hiredis as they arrive, resolve the futures in order.
Commands of all concurrent requests share the connection (Redis answers in order), so there is no pool to
wait on, and whatever was written in one turn of the loop reaches Redis in one segment.

Failures speak redis-py's exceptions (`gateway.database.redis_link.UNAVAILABLE` catches them): a refused or
lost connection is `ConnectionError` for every command waiting on it (the next command connects afresh, once),
a connection that answers nothing for two periods of `stall_s` while commands wait is closed the same way, an
error reply is `ResponseError` (`NoScriptError`, `ReadOnlyError` by their prefixes) for that command only.
`evalsha` loads a script Redis does not know (a restarted Redis) and runs it again. URLs: `redis://` and
`rediss://` (TLS), with user, password and database number; anything else stays with redis-py (`supported`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

__all__ = ["RespClient", "supported"]

_ERRORS = {"NOSCRIPT": NoScriptError, "READONLY": ReadOnlyError}


def supported(url: str) -> bool:
    return urlsplit(url).scheme in ("redis", "rediss")


def _error(reply: Exception) -> ResponseError:
    message = str(reply.args[0] if reply.args else reply)
    kind = _ERRORS.get(message.split(" ", 1)[0], ResponseError)
    return kind(message)


class _Connection(asyncio.Protocol):
    def __init__(self, stall_s: float) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._stall_s = stall_s
        self._timer: asyncio.TimerHandle | None = None
        self._heard = True  # a reply (or nothing awaited) since the watchdog last looked
        self._silent = 0  # the watchdog's periods in a row without a reply while replies were awaited

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._heard = True
        reader, waiting = self._reader, self._waiting
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if not waiting:  # a reply nobody asked for: the protocol is broken
                self._close(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            waiter = waiting.popleft()
            if waiter.done():  # its caller gave up (a deadline): the reply is dropped
                continue
            if isinstance(reply, ResponseError):
                waiter.set_exception(_error(reply))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc!r}" if exc else "Redis closed it"))

    def send(self, packed: bytes, count: int) -> list[asyncio.Future[Any]]:
        """Write `packed` (`count` commands); a future for each reply, in order."""
        if self.lost or self.transport is None or self.transport.is_closing():
            raise RedisConnectionError("the connection to Redis is closed")
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in range(count)]
        if not self._waiting:
            self._heard = True  # a stall counts from now, not from the last reply
        self._waiting.extend(waiters)
        self.transport.write(packed)
        if self._timer is None:
            self._timer = loop.call_later(self._stall_s, self._watch)
        return waiters

    def close(self) -> None:
        self._close(RedisConnectionError("the connection to Redis was closed"))

    def _watch(self) -> None:
        """Every `stall_s` while replies are awaited: a connection that answered nothing for two periods in a
        row is closed. Two, not one: a loop running late may fire this timer before it reads a reply that
        arrived in time - our own lag must not be blamed on Redis."""
        self._timer = None
        if not self._waiting or self.lost:
            self._silent = 0
            return
        self._silent = 0 if self._heard else self._silent + 1
        if self._silent >= 2:
            self._close(RedisConnectionError(f"Redis answered nothing for {2 * self._stall_s:g} s"))
            return
        self._heard = False
        self._timer = asyncio.get_running_loop().call_later(self._stall_s, self._watch)

    def _close(self, error: Exception) -> None:
        self._fail(error)
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)


class RespClient:
    """Commands to one Redis over one pipelined connection, made (again) when a command needs it.

    `stall_s`: how long a connection may answer nothing while commands wait before it is given up; each
    caller bounds its own wait besides (RedisLink's deadlines)."""

    def __init__(self, url: str, *, connect_timeout_s: float, stall_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// or rediss:// URL: {url!r}")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._where = f"{self._host}:{self._port}"
        self._ssl = ssl.create_default_context() if parts.scheme == "rediss" else None
        setup: list[tuple[Any, ...]] = []
        if parts.password is not None:
            user = (unquote(parts.username),) if parts.username else ()
            setup.append(("AUTH", *user, unquote(parts.password)))
        database = parts.path.lstrip("/")
        if database and database != "0":
            setup.append(("SELECT", int(database)))
        self._setup = setup
        self._connect_timeout_s = connect_timeout_s
        self._stall_s = stall_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    async def execute(self, *command: Any) -> Any:
        (reply,) = await self.pipeline([command])
        return reply

    async def evalsha(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's reply; a script Redis does not know is loaded, and run again."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.execute("SCRIPT", "LOAD", script.script)
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Every command's reply, in order, from one write. An error reply raises (the first one), after every
        reply has arrived; each command ran or failed on its own (no transaction)."""
        packed = b"".join(hiredis.pack_command(tuple(command)) for command in commands)
        connection = await self._connected()
        waiters = connection.send(packed, len(commands))
        try:
            replies = await asyncio.gather(*waiters) if len(waiters) > 1 else [await waiters[0]]
        except BaseException:
            for waiter in waiters:
                waiter.cancel()  # the replies still to come are read and dropped
            raise
        return replies

    async def evalsha_many(
        self, script: AsyncScript, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any | ResponseError]:
        """Each (keys, args) call of `script`, from one write; each reply or the error Redis answered. Calls
        Redis answered NOSCRIPT (a restarted Redis) are run again once the script is loaded."""
        results = await self._many([("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls])
        missing = [index for index, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            await self.execute("SCRIPT", "LOAD", script.script)
            again = await self._many(
                [("EVALSHA", script.sha, len(calls[i][0]), *calls[i][0], *calls[i][1]) for i in missing]
            )
            for index, result in zip(missing, again, strict=True):
                results[index] = result
        return results

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _many(self, commands: list[tuple[Any, ...]]) -> list[Any | ResponseError]:
        packed = b"".join(hiredis.pack_command(command) for command in commands)
        connection = await self._connected()
        waiters = connection.send(packed, len(commands))
        try:
            done = await asyncio.gather(*waiters, return_exceptions=True)
        except BaseException:
            for waiter in waiters:
                waiter.cancel()
            raise
        for result in done:
            if isinstance(result, BaseException) and not isinstance(result, ResponseError):
                raise result  # the connection failed: nothing is known of any of them
        return list(done)

    async def _connected(self) -> _Connection:
        connection = self._connection
        if connection is not None and not connection.lost:
            return connection
        if self._connecting is None:  # one connect at a time; every caller waits for it
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        connecting = self._connecting
        try:
            connection = await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None
        return connection

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self._stall_s),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
                if self._setup:
                    packed = b"".join(hiredis.pack_command(command) for command in self._setup)
                    try:
                        await asyncio.gather(*connection.send(packed, len(self._setup)))
                    except BaseException:
                        connection.close()
                        raise
        except TimeoutError:
            raise RedisConnectionError(f"timed out connecting to Redis at {self._where}") from None
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis at {self._where}: {exc}") from exc
        self._connection = connection
        return connection
