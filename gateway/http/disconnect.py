"""Noticing that a client went away while its request still runs, so that upstream work stops."""

from __future__ import annotations

import asyncio

from starlette.types import Receive

__all__ = ["CLIENT_CLOSED", "SHUT_DOWN", "DisconnectWatch", "ended_status"]

# nginx's "client closed request", logged and metered for every request whose client left before its
# response ended - also a stream that had begun with a 200 (nginx keeps the 200 once its headers are out; one
# status for every request a client abandoned is what a dashboard and a log search want); never seen by the
# client
CLIENT_CLOSED = 499
SHUT_DOWN = 503  # a shutdown cut the request before any answer was sent: logged and metered so


def ended_status(*, disconnected: bool, opened: bool) -> int:
    """The status recorded for a request cancelled mid-way: 499 when its client left; else (a shutdown) the
    200 a stream had already sent, or 503 when nothing had been sent."""
    if disconnected:
        return CLIENT_CLOSED
    return 200 if opened else SHUT_DOWN


class DisconnectWatch:
    """Cancels the task that started it when the client disconnects, until `stop()`.

    The request body must have been read in full: from then on the server's `receive()` only ever
    returns `http.disconnect`. The cancelled task calls `absorb()` in its CancelledError handler to
    tell a disconnect (carry on and meter it) from a shutdown (re-raise).
    """

    __slots__ = ("_target", "_task", "disconnected")

    def __init__(self, receive: Receive) -> None:
        self.disconnected = False
        target = asyncio.current_task()
        assert target is not None
        self._target: asyncio.Task[object] | None = target
        self._task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if self._target is not None:
            self.disconnected = True
            self._target.cancel()

    def stop(self) -> None:
        self._target = None
        # let go of the watching task as it is cancelled: it keeps its CancelledError, whose traceback holds
        # `_watch`'s frame, which holds this watch; a watch holding the task would make all of it (with the
        # server's request cycle in `receive`'s frame) a reference cycle, left to the garbage collector
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    def absorb(self) -> bool:
        """In the target's CancelledError handler: True (and the cancellation undone) if it came
        from a disconnect, False if someone else cancelled the task."""
        self.stop()
        if not self.disconnected:
            return False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True
