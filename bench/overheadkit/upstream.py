#!/usr/bin/env python3
"""An instant OpenAI-compatible upstream: vLLM's chat completion shapes, answered as fast as one process can.

    PYTHONPATH=bench python -m overheadkit.upstream PORT [--paced-model llama-3.1-8b] [--itl-ms 25]

Raw HTTP/1.1 on asyncio (uvloop when installed), no framework: what a gateway in front of it costs must
not drown in what the upstream costs (`tiergate simulate` runs an ASGI stack and a tokenizer under uvicorn;
this writes bytes encoded in advance). A request's `max_tokens` (or `max_completion_tokens`, default 16) is
the number of tokens answered, one token a chunk when streamed, as vLLM streams: a first chunk with the
role, one `delta.content` a token, the last with `finish_reason: "length"`, then a chunk with `usage`
(prompt, completion, total tokens) when `stream_options.include_usage` asks for it, then `data: [DONE]`.
Compact JSON, `id` and `model` in every chunk, a fresh `id` per request. Each body is encoded once per shape
and reused; a stream is written one chunk a write (as vLLM writes a token a step), all at once.

Requests for `--paced-model` stream one chunk every `--itl-ms` instead, all such streams on one clock (as an
engine's decode step emits a token for every sequence of its batch): many concurrent streams that stay open
for a while, for a fixed number of chunks per second; their response and first chunk come `--ttft-ms` after
the request (the engine's prefill; default 0).

Also: `GET /health` (200), `GET /v1/models`, `POST /tokenize` (`{"count": ...}`), `GET /metrics` (empty).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import time
from collections.abc import Callable
from typing import Any, cast

MODEL = "qwen3-8b"
_ID = b"chatcmpl-0000000000000000"  # fixed width: a fresh id replaces it without moving anything
_WORDS = (" The", " sky", " looks", " blue", " because", " air", " scatters", " short", " light", ".")
_MAX_BODY = 1 << 20
_CREATED = 1767225600
_CACHE_LIMIT = 256


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion}


def completion_body(model: str, tokens: int, prompt: int) -> bytes:
    text = "".join(_WORDS[i % len(_WORDS)] for i in range(tokens))
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text, "tool_calls": []},
        "logprobs": None,
        "finish_reason": "length",
        "stop_reason": None,
    }
    return _dumps(
        {
            "id": _ID.decode(),
            "object": "chat.completion",
            "created": _CREATED,
            "model": model,
            "choices": [choice],
            "usage": _usage(prompt, tokens),
        }
    )


def stream_events(model: str, tokens: int, prompt: int, include_usage: bool) -> list[bytes]:
    """Every SSE event of one stream, each an HTTP/1.1 chunk (`size CRLF data CRLF`), the terminator last."""
    head = {"id": _ID.decode(), "object": "chat.completion.chunk", "created": _CREATED, "model": model}

    def chunk(delta: dict[str, str], finish: str | None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    payloads = [chunk({"role": "assistant", "content": ""}, None)]
    payloads += [
        chunk({"content": _WORDS[i % len(_WORDS)]}, "length" if i == tokens - 1 else None)
        for i in range(tokens)
    ]
    if include_usage:
        payloads.append({**head, "choices": [], "usage": _usage(prompt, tokens)})
    events = [b"data: " + _dumps(p) + b"\n\n" for p in payloads] + [b"data: [DONE]\n\n"]
    return [b"%x\r\n%s\r\n" % (len(e), e) for e in events] + [b"0\r\n\r\n"]


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _response(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        content_type,
        len(body),
        body,
    )


_HEALTH = _response(b"200 OK", b"")
_METRICS = _response(b"200 OK", b"", b"text/plain; version=0.0.4")
_NOT_FOUND = _response(b"404 Not Found", b'{"error":{"message":"not found","type":"NotFoundError"}}')
_BAD = _response(b"400 Bad Request", b'{"error":{"message":"bad request","type":"BadRequestError"}}')


class Upstream:
    """The shared state of one upstream process: encoded bodies by shape, the id counter, paced streams."""

    def __init__(self, paced_model: str | None, itl_s: float, ttft_s: float = 0.0) -> None:
        self.paced_model = paced_model
        self.ttft_s = ttft_s
        self.itl_s = itl_s
        self._json: dict[tuple[str, int, int], bytes] = {}
        self._streams: dict[tuple[str, int, int, bool], list[bytes]] = {}
        self._counter = 0
        # paced streams: (transport, frames, [next frame, last token's]); one clock writes to each per tick
        self._paced: list[tuple[asyncio.Transport, list[bytes], list[int]]] = []
        self._ticking = False

    def _fresh_id(self) -> bytes:
        self._counter += 1
        return b"chatcmpl-%016x" % self._counter

    def answer(self, transport: asyncio.Transport, method: bytes, path: bytes, body: bytes) -> None:
        if method == b"POST" and path == b"/v1/chat/completions":
            self._chat(transport, body)
        elif method == b"GET" and path == b"/health":
            transport.write(_HEALTH)
        elif method == b"GET" and path == b"/metrics":
            transport.write(_METRICS)
        elif method == b"POST" and path == b"/tokenize":
            transport.write(_response(b"200 OK", b'{"count":%d}' % max(1, len(body) // 4)))
        elif method == b"GET" and path == b"/v1/models":
            transport.write(_response(b"200 OK", _dumps({"object": "list", "data": [{"id": MODEL}]})))
        else:
            transport.write(_NOT_FOUND)

    def _chat(self, transport: asyncio.Transport, raw: bytes) -> None:
        try:
            request = json.loads(raw)
            model = str(request.get("model") or MODEL)
            tokens = int(request.get("max_tokens") or request.get("max_completion_tokens") or 16)
            stream = bool(request.get("stream"))
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        except (ValueError, TypeError, AttributeError):
            transport.write(_BAD)
            return
        prompt = max(1, len(raw) // 16)  # a stand-in: the same body always counts the same
        if not stream:
            key = (model, tokens, prompt)
            if (body := self._json.get(key)) is None:
                body = self._json[key] = completion_body(model, tokens, prompt)
                self._trim()
            transport.write(_response(b"200 OK", body.replace(_ID, self._fresh_id())))
            return
        skey = (model, tokens, prompt, include_usage)
        if (frames := self._streams.get(skey)) is None:
            frames = self._streams[skey] = stream_events(model, tokens, prompt, include_usage)
            self._trim()
        fresh = self._fresh_id()
        frames = [frame.replace(_ID, fresh) for frame in frames]
        if model == self.paced_model:
            if self.ttft_s > 0:
                asyncio.get_running_loop().call_later(self.ttft_s, self._pace, transport, frames, tokens)
            else:
                self._pace(transport, frames, tokens)
            return
        transport.write(_STREAM_HEAD + frames[0])
        for frame in frames[1:]:
            transport.write(frame)

    def _pace(self, transport: asyncio.Transport, frames: list[bytes], tokens: int) -> None:
        """A paced stream's head and first chunk (its first token), then a chunk a tick."""
        if transport.is_closing():
            return
        transport.write(_STREAM_HEAD + frames[0])
        self._paced.append((transport, frames, [1, tokens]))
        if not self._ticking:
            self._ticking = True
            asyncio.get_running_loop().call_later(self.itl_s, self._tick)

    def _tick(self) -> None:
        alive = []
        for entry in self._paced:
            transport, frames, state = entry
            if transport.is_closing():
                continue
            index, last_token = state
            if index < last_token:
                transport.write(frames[index])
                state[0] = index + 1
                alive.append(entry)
            else:  # the last token, the usage, [DONE] and the terminator go together
                transport.write(b"".join(frames[index:]))
        self._paced = alive
        if alive:
            asyncio.get_running_loop().call_later(self.itl_s, self._tick)
        else:
            self._ticking = False

    def _trim(self) -> None:
        if len(self._json) + len(self._streams) > _CACHE_LIMIT:
            self._json.clear()
            self._streams.clear()


class Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests with Content-Length bodies, kept alive, answered in order."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, though not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length > _MAX_BODY:
                self.transport.close()
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            method, path, _ = [*head.split(b"\r\n", 1)[0].split(b" "), b"", b""][:3]
            self.upstream.answer(self.transport, method, path.split(b"?", 1)[0], body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def raise_open_file_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard one: a thousand streams need more than the usual 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def event_loop_runner() -> Callable[[Any], Any]:
    """uvloop's run when installed (tiergate's own dependency), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    run: Callable[[Any], Any] = uvloop.run
    return run


async def serve(port: int, upstream: Upstream) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(upstream), "127.0.0.1", port, backlog=4096)
    print(f"upstream listening on 127.0.0.1:{port} at {time.strftime('%H:%M:%S')}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("port", type=int)
    parser.add_argument("--paced-model", default=None, help="stream this model's tokens on a clock")
    parser.add_argument("--itl-ms", type=float, default=25.0, help="the clock's period (default 25 ms)")
    parser.add_argument(
        "--ttft-ms", type=float, default=0.0, help="a paced stream's first token after this (default 0)"
    )
    args = parser.parse_args()
    raise_open_file_limit()
    upstream = Upstream(args.paced_model, args.itl_ms / 1000, args.ttft_ms / 1000)
    with contextlib.suppress(KeyboardInterrupt):
        event_loop_runner()(serve(args.port, upstream))


if __name__ == "__main__":
    main()
