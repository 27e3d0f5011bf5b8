"""The journal's line format: one ledger row per line, each line checking itself.

    <length: 8 hex digits> <crc32: 8 hex digits> <payload: JSON>\\n

`length` counts the payload's bytes and `crc32` is computed over them. JSON from orjson never contains a
raw newline, so lines can be found by splitting on `\\n` even when a length is damaged. A process killed
in the middle of a write leaves a last line without its `\\n` (torn: ignored, it was never acknowledged);
a complete line whose length or checksum does not match is corrupt (reported, quarantined, skipped). The
payload is `{"v": 1, "record": UsageRecord.to_dict(), "charge": Charge.to_dict()}`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from pricing.charges import Charge
from pricing.records import LedgerRow, UsageRecord

__all__ = ["LINE_FORMAT", "CorruptLine", "Position", "decode_line", "encode_line"]

LINE_FORMAT = 1
_HEADER = 18  # "%08x %08x "


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in a journal: a byte offset in a segment. Everything before it is meant."""

    segment: int
    offset: int


class CorruptLine(ValueError):
    """A complete line that fails its own checks: damaged on disk, or not written by this code."""


def encode_line(row: LedgerRow) -> bytes:
    payload = orjson.dumps({"v": LINE_FORMAT, "record": row.record.to_dict(), "charge": row.charge.to_dict()})
    return b"%08x %08x %s\n" % (len(payload), zlib.crc32(payload), payload)


def decode_line(line: bytes) -> LedgerRow:
    """A line, `\\n` included, as the row it holds; CorruptLine says what is wrong with it."""
    if len(line) < _HEADER + 1 or line[8:9] != b" " or line[17:18] != b" " or not line.endswith(b"\n"):
        raise CorruptLine(f"malformed line of {len(line)} bytes")
    try:
        length, crc = int(line[0:8], 16), int(line[9:17], 16)
    except ValueError:
        raise CorruptLine("malformed length or checksum") from None
    payload = line[_HEADER:-1]
    if len(payload) != length:
        raise CorruptLine(f"payload is {len(payload)} bytes, its header says {length}")
    if zlib.crc32(payload) != crc:
        raise CorruptLine(f"checksum mismatch: {zlib.crc32(payload):08x}, header says {crc:08x}")
    try:
        data: Any = orjson.loads(payload)
        if not isinstance(data, dict) or data.get("v") != LINE_FORMAT:
            raise ValueError(f"not a version {LINE_FORMAT} journal line")
        return LedgerRow(UsageRecord.from_dict(data["record"]), Charge.from_dict(data["charge"]))
    except (ValueError, KeyError, TypeError) as exc:
        # the checksum matched, so these bytes were written like this: a writer of another version
        raise CorruptLine(f"checksummed but unreadable: {exc}") from exc
