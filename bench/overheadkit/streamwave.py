#!/usr/bin/env python3
"""A wave of concurrent streams: N chat completion streams opened at once, each read to its end.

    PYTHONPATH=bench python -m overheadkit.streamwave URL N BODY_FILE [--header 'N: v'] [--min-events K]

Raw HTTP/1.1 over asyncio sockets (uvloop when installed), one connection a stream (`connection: close`),
nothing parsed until a stream has ended: at a few tens of thousands of chunks a second, an HTTP client
library would be what gets measured. Prints one JSON line: how many streams completed, the errors by kind
(`HTTP 503 gateway_overloaded`, a socket error's type, `incomplete`: no `data: [DONE]` at the end or fewer
than K events), the time to first byte of every answered stream (p50, p99, max), when the first stream ended
(so whether all N were open at once), the wave's seconds and the client's own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from overheadkit.upstream import event_loop_runner, raise_open_file_limit

_READ = 1 << 16
_ERROR_CODE = re.compile(rb'"code"\s*:\s*"([^"]+)"')
_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


@dataclass
class Outcome:
    ttfb_s: float | None = None
    end_s: float | None = None
    error: str | None = None


def dechunk(body: bytes) -> bytes | None:
    """The payload of an HTTP/1.1 chunked body, or None when it is cut short or malformed."""
    out, at = bytearray(), 0
    while True:
        eol = body.find(b"\r\n", at)
        if eol < 0:
            return None
        try:
            size = int(body[at:eol].split(b";", 1)[0], 16)
        except ValueError:
            return None
        if size == 0:
            return bytes(out)
        start = eol + 2
        if len(body) < start + size + 2:
            return None
        out += body[start : start + size]
        at = start + size + 2


def judge(raw: bytes, min_events: int) -> str | None:
    """None for a complete 200 stream, else what was wrong with it."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return "no response" if not raw else "incomplete headers"
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b"?"
    if status != b"200":
        code = _ERROR_CODE.search(body)
        return f"HTTP {status.decode(errors='replace')}" + (f" {code.group(1).decode()}" if code else "")
    if b"transfer-encoding: chunked" in head.lower():
        decoded = dechunk(body)
        if decoded is None:
            return "incomplete (chunked body cut short)"
        body = decoded
    if not body.rstrip().endswith(b"data: [DONE]"):
        return "incomplete (no data: [DONE] at the end)"
    if body.count(b"data:") < min_events:
        return f"incomplete (fewer than {min_events} events)"
    return None


async def one_stream(host: str, port: int, request: bytes, min_events: int, start: float) -> Outcome:
    outcome = Outcome()
    raw = bytearray()
    body_at, length = -1, None
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=_READ)
        try:
            writer.write(request)
            while data := await reader.read(_READ):
                if outcome.ttfb_s is None:
                    outcome.ttfb_s = time.monotonic() - start
                raw += data
                if body_at < 0:
                    end = raw.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    body_at = end + 4
                    match = _LENGTH.search(raw, 0, end)
                    length = int(match.group(1)) if match else None
                # a server need not close the connection: the response's own framing says it has ended
                if length is not None and len(raw) - body_at >= length:
                    break
                if length is None and raw.endswith(b"0\r\n\r\n") and dechunk(bytes(raw[body_at:])):
                    break
        finally:
            writer.close()
    except (OSError, asyncio.IncompleteReadError) as exc:
        outcome.error = f"socket: {type(exc).__name__}"
        return outcome
    outcome.end_s = time.monotonic() - start
    outcome.error = judge(bytes(raw), min_events)
    return outcome


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wave(url: str, streams: int, body: bytes, headers: list[str], min_events: int) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *headers,
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    start = time.monotonic()
    opened = (one_stream(host, port, request, min_events, start) for _ in range(streams))
    outcomes = await asyncio.gather(*opened)
    seconds = time.monotonic() - start
    ttfb = [o.ttfb_s for o in outcomes if o.ttfb_s is not None and o.error is None]
    ends = [o.end_s for o in outcomes if o.end_s is not None]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "streams": streams,
        "ok": sum(1 for o in outcomes if o.error is None),
        "errors": dict(Counter(o.error for o in outcomes if o.error is not None)),
        "ttfb_p50_ms": _ms(_pct(ttfb, 0.5)),
        "ttfb_p99_ms": _ms(_pct(ttfb, 0.99)),
        "ttfb_max_ms": _ms(max(ttfb, default=None)),
        "first_end_ms": _ms(min(ends, default=None)),
        "seconds": seconds,
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("streams", type=int)
    parser.add_argument("body_file", type=Path)
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--min-events", type=int, default=1, help="fewer data: events is incomplete")
    args = parser.parse_args()
    raise_open_file_limit()
    body = args.body_file.read_bytes()
    result = event_loop_runner()(wave(args.url, args.streams, body, args.header, args.min_events))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
