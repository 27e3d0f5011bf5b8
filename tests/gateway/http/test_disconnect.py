"""The disconnect watch: it cancels its request on a disconnect, and leaves no garbage for the collector."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest
from starlette.types import Message

from gateway.http.disconnect import DisconnectWatch


class Client:
    """A server's `receive` after the body: it returns only when the client disconnects."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_stopped_watch_is_freed_without_the_collector(collector_off: None) -> None:
    client = Client()
    watched: list[weakref.ref[asyncio.Task[None]]] = []

    async def request() -> None:
        watch = DisconnectWatch(client.receive)
        await asyncio.sleep(0)  # the watch now waits in `receive`
        task = next(
            t
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") == "DisconnectWatch._watch"
        )
        watched.append(weakref.ref(task))
        del task
        assert watched[0]() is not None  # the watch holds its task while it watches
        watch.stop()  # the answer is complete: the watch is cancelled
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the cancellation has run

    await asyncio.create_task(request())
    # with the collector off, only reference counts free things: a cycle through the cancelled task (its
    # CancelledError's traceback holding the watch, the watch holding the task) would keep it
    assert watched[0]() is None


async def test_a_disconnect_cancels_the_request_and_absorb_undoes_it() -> None:
    client = Client()
    outcome: list[str] = []

    async def request() -> None:
        watch = DisconnectWatch(client.receive)
        try:
            await asyncio.sleep(60)  # the engine call
            outcome.append("answered")
        except asyncio.CancelledError:
            outcome.append("disconnected" if watch.absorb() else "shut down")

    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    client.gone.set()
    await asyncio.wait_for(task, 30)
    assert outcome == ["disconnected"] and not task.cancelled()


async def test_a_cancel_from_elsewhere_is_not_a_disconnect() -> None:
    client = Client()
    outcome: list[str] = []

    async def request() -> None:
        watch = DisconnectWatch(client.receive)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.append("disconnected" if watch.absorb() else "shut down")
            raise

    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["shut down"]
