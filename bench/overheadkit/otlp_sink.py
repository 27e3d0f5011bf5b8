"""A local OTLP/HTTP traces sink for the tracing benchmark: answers POST /v1/traces with 200 and counts what
came (GET /stats: posts and bytes; GET /health: 200). It does not decode the spans: its own work stays small.

    python bench/overheadkit/otlp_sink.py PORT
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve(port: int) -> None:
    stats = {"posts": 0, "bytes": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the exporter's session reuses its connection

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            stats["posts"] += 1
            stats["bytes"] += len(body)
            self._answer(200, b"", "application/x-protobuf")

        def do_GET(self) -> None:
            if self.path == "/stats":
                self._answer(200, json.dumps(stats).encode(), "application/json")
            else:
                self._answer(200, b"ok", "text/plain")

        def _answer(self, status: int, body: bytes, media_type: str) -> None:
            self.send_response(status)
            self.send_header("content-type", media_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
