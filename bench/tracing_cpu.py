#!/usr/bin/env python3
"""CPU per request with tracing off, on, and on sampling one trace in ten, in one process, without a network.

    python bench/tracing_cpu.py [--requests 1500] [--rounds 4]

Each variant is a gateway app served through httpx.ASGITransport (no sockets), with an in-process engine
(httpx.MockTransport, a canned answer) and, when tracing is on, a real OTLP/HTTP sink on a local port (in a
thread of this process: its work counts, as the exporter's does). The figure is this process's CPU time over
the requests (client included, the same for every variant), after warm-up and with the spans flushed; the
variants take turns, `--rounds` times, and the medians are printed. bench/overhead.py --tracing measures the
same over real sockets with wrk; this one is less moved by other processes on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
from starlette.types import Receive, Scope, Send

from gateway import create_app, load_settings
from gateway.state import GatewayState

REPLY = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "qwen3-8b",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
)
BODY = {"model": "qwen3-8b", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}


async def engine(request: httpx.Request) -> httpx.Response:
    await request.aread()
    return httpx.Response(200, content=REPLY, headers={"content-type": "application/json"})


@contextmanager
def sink() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()


async def cpu_per_request(tracing: dict[str, Any], requests: int) -> float:
    settings = load_settings(
        None,
        pools={"fast": {"replicas": ["http://engine:8000"], "health": {"interval_s": 3600}}},
        models={"qwen3-8b": {"tiers": {"fast": {"pool": "fast"}}}},
        auth={"mode": "disabled"},
        tracing=tracing,
    )
    app = create_app(settings)
    state = await GatewayState.create(settings, transport=httpx.MockTransport(engine))

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": {"gateway": state}}, receive, send)

    transport = httpx.ASGITransport(app=with_state)
    async with httpx.AsyncClient(transport=transport, base_url="http://tiergate") as client:
        for _ in range(200):  # warm-up
            assert (await client.post("/v1/chat/completions", json=BODY)).status_code == 200
        if state.tracing is not None:
            state.tracing.force_flush()
        started = time.process_time()
        for _ in range(requests):
            await client.post("/v1/chat/completions", json=BODY)
        if state.tracing is not None:
            state.tracing.force_flush()  # the export of these requests' spans counts
        used = time.process_time() - started
    await state.aclose()
    return 1e6 * used / requests


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with sink() as endpoint:
        variants: dict[str, dict[str, Any]] = {
            "off": {"enabled": False},
            "on": {"enabled": True, "endpoint": endpoint},
            "on, 10%": {"enabled": True, "endpoint": endpoint, "sample_ratio": 0.1},
        }
        figures: dict[str, list[float]] = {name: [] for name in variants}
        for turn in range(args.rounds):
            order = list(variants) if turn % 2 == 0 else list(variants)[::-1]
            for name in order:
                figures[name].append(asyncio.run(cpu_per_request(variants[name], args.requests)))
                print(f"round {turn + 1}: {name:8} {figures[name][-1]:7.0f} us/request", flush=True)
    base = statistics.median(figures["off"])
    print(f"\nmedians over {args.rounds} rounds of {args.requests} requests (CPU us per request):")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:8} {median:7.0f}  {median - base:+6.0f}  ({', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
