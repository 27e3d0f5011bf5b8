"""Incremental parsing of a server-sent-events body into the `data` of each event."""

from __future__ import annotations

__all__ = ["SSEDecoder"]

_DATA = b"data: "
_NEXT_DATA = b"\n\ndata: "  # one event's end and the next one's start


class SSEDecoder:
    """Feed it body bytes as they arrive; it returns the data of every event completed so far.

    Engines send `data: {...}\\n\\n`; CRLF or CR line ends (a CRLF cut between chunks too), multi-line data
    and comments are handled as well.
    """

    __slots__ = ("_after_cr", "_buffer")

    def __init__(self) -> None:
        self._buffer = b""  # line ends already normalised to LF
        self._after_cr = False  # the last chunk ended on a CR, taken as a line end at once

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._after_cr and chunk:
            # a CRLF cut between two chunks is one line end: its LF is dropped, not read as a blank line
            self._after_cr = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._after_cr = chunk[-1] == 0x0D
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return []
        whole, self._buffer = buffer[:end], buffer[end + 2 :]  # the rest: an event not yet terminated
        # what engines send, in a few passes over the bytes in C: nothing but one-line `data: ` events, every
        # line end part of an event's end (a multi-line event, a comment or another field fails the count)
        if whole.startswith(_DATA) and whole.count(b"\n") == 2 * whole.count(_NEXT_DATA):
            return whole[6:].split(_NEXT_DATA)
        blocks = whole.split(b"\n\n")
        events: list[bytes] = []
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:  # the common case, one line
                events.append(block[6:])
            elif (data := _event_data(block)) is not None:
                events.append(data)
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (what a cut stream left behind)."""
        return self._buffer


def _event_data(block: bytes) -> bytes | None:
    parts: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None
