"""The lean Redis client of the hot path, against a real redis-server of the test's own (killed, paused and
restarted at will): pipelined replies reach their own callers, errors stay with their command, scripts Redis
forgot are loaded again, and a lost or silent connection fails its waiting commands and is made again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gateway.database.resp import RespClient, supported
from tests.gateway.limits.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="NO REDIS: redis-server is not installed")

ADD = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[RespClient]:
    resp = RespClient(server.url, connect_timeout_s=5.0, stall_s=0.5)
    yield resp
    await resp.aclose()


def script(server: RedisServer, source: str) -> AsyncScript:
    return redis.asyncio.Redis.from_url(server.url).register_script(source)  # its sha and source only


async def test_concurrent_callers_each_get_their_own_reply(client: RespClient) -> None:
    await asyncio.gather(*(client.execute("SET", f"k{i}", f"v{i}") for i in range(200)))
    replies = await asyncio.gather(*(client.execute("GET", f"k{i}") for i in range(200)))
    assert replies == [f"v{i}".encode() for i in range(200)]
    assert await client.pipeline([("INCR", "n"), ("INCR", "n"), ("GET", "n")]) == [1, 2, b"2"]


async def test_an_error_reply_fails_its_command_only(client: RespClient) -> None:
    await client.execute("SET", "text", "abc")
    replies: list[object] = await asyncio.gather(
        client.execute("INCR", "text"), client.execute("GET", "text"), return_exceptions=True
    )
    assert isinstance(replies[0], ResponseError) and replies[1] == b"abc"
    assert await client.execute("PING") == b"PONG"


async def test_a_script_redis_forgot_is_loaded_and_run_again(client: RespClient, server: RedisServer) -> None:
    add = script(server, ADD)
    assert await client.evalsha(add, ["a"], [2]) == 2
    await client.execute("SCRIPT", "FLUSH")
    assert await client.evalsha(add, ["a"], [3]) == 5
    await client.execute("SCRIPT", "FLUSH")
    replies = await client.evalsha_many(add, [(["a"], [1]), (["b"], [10]), (["text"], [1])])
    assert replies == [6, 10, 1]
    await client.execute("SET", "text", "abc")
    mixed = await client.evalsha_many(add, [(["a"], [1]), (["text"], [1])])
    assert mixed[0] == 7 and isinstance(mixed[1], ResponseError)  # each call its own fate


async def test_a_killed_redis_fails_the_waiting_and_a_restarted_one_is_reconnected(
    client: RespClient, server: RedisServer
) -> None:
    assert await client.execute("PING") == b"PONG"
    waiting = asyncio.create_task(client.execute("BLPOP", "nothing", 0))  # never answered: Redis dies first
    await asyncio.sleep(0)  # written: whether Redis read it before it died or not, its answer never comes
    server.stop()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(waiting, 30)
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")  # nobody listens: refused, at once
    server.start()
    assert await client.execute("SET", "back", "1") is not None  # a fresh connection, empty server
    assert await client.execute("GET", "back") == b"1"


async def test_a_silent_redis_is_given_up_after_stall_s(client: RespClient, server: RedisServer) -> None:
    assert await client.execute("PING") == b"PONG"
    server.pause()
    try:
        with pytest.raises(RedisConnectionError, match="answered nothing"):
            await asyncio.wait_for(client.execute("PING"), 30)  # stall_s is 0.5: given up long before
    finally:
        server.resume()
    assert await client.execute("PING") == b"PONG"  # connected again


async def test_the_url_chooses_the_database(server: RedisServer) -> None:
    other = RespClient(server.url.rsplit("/", 1)[0] + "/3", connect_timeout_s=5.0, stall_s=5.0)
    first = RespClient(server.url, connect_timeout_s=5.0, stall_s=5.0)
    try:
        await other.execute("SET", "where", "three")
        assert await first.execute("GET", "where") is None
        assert await other.execute("GET", "where") == b"three"
    finally:
        await other.aclose()
        await first.aclose()
    assert supported("rediss://host:6380/0") and not supported("unix:///tmp/redis.sock")
