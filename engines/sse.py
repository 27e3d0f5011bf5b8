"""Incremental parsing of a server-sent-events body into the `data` of each event."""

from __future__ import annotations

__all__ = ["SSEDecoder"]


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
        blocks = buffer.split(b"\n\n")
        self._buffer = blocks.pop()  # an event not yet terminated (often b"")
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
