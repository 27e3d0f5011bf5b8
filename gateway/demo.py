"""`tiergate demo`: the embedded default - a gateway and two simulated engine pools in one process."""

from __future__ import annotations

import asyncio
import secrets
import socket
import tempfile
from pathlib import Path
from typing import Any

import uvicorn

from engines.simulator import create_simulator_app, profile
from gateway.app import create_app
from gateway.database import open_database
from gateway.http.connections import GatewayProtocol
from gateway.keys import KeyStore
from gateway.limits import Quota
from gateway.settings import load_settings

__all__ = ["demo_settings", "listening_socket", "run_demo"]


def demo_settings(host: str, port: int, fast_url: str, deliberate_url: str) -> dict[str, Any]:
    """The demo's configuration, as the YAML of `config/example.yaml` would give it."""
    return {
        "server": {"host": host, "port": port},
        "pricing": {"book": str(Path(__file__).with_name("prices.yaml"))},
        "pools": {
            "fast": {"replicas": [fast_url], "health": {"interval_s": 2.0}},
            "deliberate": {"replicas": [deliberate_url], "health": {"interval_s": 2.0}},
        },
        "models": {
            "qwen3-8b": {
                "default_tier": "fast",
                "max_model_len": 32768,
                "max_output_tokens": 8192,
                "tiers": {
                    "fast": {"pool": "fast"},
                    "deliberate": {"pool": "deliberate", "deliberation": {}},  # the default depth promise
                },
            },
            "llama-3.1-8b": {
                "max_model_len": 32768,
                "max_output_tokens": 8192,
                "tiers": {"fast": {"pool": "fast"}},
            },
            "qwen3-32b": {
                "max_model_len": 32768,
                "max_output_tokens": 8192,
                "tiers": {"deliberate": {"pool": "deliberate", "deliberation": {}}},
            },
        },
    }


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def listening_socket(host: str, port: int) -> socket.socket:
    """The gateway's socket, bound before anything starts (OSError, EADDRINUSE when the port is busy) and
    handed to its server, so no other process can take the port between the check and the start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's own: TIME_WAIT is no owner
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _server(app: Any, host: str, port: int, **options: Any) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="on", **options
    )
    return uvicorn.Server(config)


async def _demo_key(database_url: str) -> str:
    """A tenant `demo` with one key for both tiers; the full key exists only in this return value."""
    database = await open_database(database_url)
    try:
        store = KeyStore(database)
        await store.migrate()
        await store.create_tenant("demo", "Demo tenant")
        quota = Quota(rpm=600, tpm=1_000_000)
        _, secret = await store.create_key(
            "demo", name="demo", tiers=["fast", "deliberate"], quotas={"fast": quota, "deliberate": quota}
        )
        return str(secret)
    finally:
        await database.aclose()


def banner(base_url: str, fast_url: str, deliberate_url: str, api_key: str, admin_token: str) -> str:
    return f"""
tiergate demo: an OpenAI-compatible gateway at {base_url}
  fast pool        simulated vLLM with speculative decoding at {fast_url}
  deliberate pool  simulated reasoning model at {deliberate_url}
  models           {base_url}/models

curl:
  curl {base_url}/chat/completions -H 'authorization: Bearer {api_key}' \\
    -H 'content-type: application/json' \\
    -d '{{"model": "qwen3-8b:fast", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

OpenAI SDK (pip install openai):
  from openai import OpenAI
  client = OpenAI(base_url="{base_url}", api_key="{api_key}")
  reply = client.chat.completions.create(
      model="qwen3-8b:deliberate",
      messages=[{{"role": "user", "content": "Why is the sky blue?"}}],
  )
  print(reply.choices[0].message.content)

Tenant `demo`, key above: 600 requests and 1,000,000 tokens per minute in each tier.
Admin API: curl {base_url.removesuffix("/v1")}/admin/keys -H 'authorization: Bearer {admin_token}'
Web console: {base_url.removesuffix("/v1")}/console (sign in with the key above, or the admin token)
Everything lives in a temporary database, deleted when the demo stops. Press Ctrl-C to stop.
"""


async def run_demo(host: str, port: int, sock: socket.socket) -> None:
    """The demo on `sock` (see `listening_socket`), bound to `host` and `port`, until Ctrl-C."""
    with tempfile.TemporaryDirectory(prefix="tiergate-demo-") as folder:
        await _run(host, port, sock, Path(folder))


async def _run(host: str, port: int, sock: socket.socket, folder: Path) -> None:
    sim_host = "127.0.0.1"
    fast_port, deliberate_port = _free_port(sim_host), _free_port(sim_host)
    fast_url, deliberate_url = f"http://{sim_host}:{fast_port}", f"http://{sim_host}:{deliberate_port}"
    simulators = [
        _server(create_simulator_app(profile("fast")), sim_host, fast_port),
        _server(create_simulator_app(profile("deliberate")), sim_host, deliberate_port),
    ]
    database_url = f"sqlite:///{folder / 'demo.sqlite3'}"
    admin_token = secrets.token_urlsafe(24)
    settings = load_settings(
        None,
        **demo_settings(host, port, fast_url, deliberate_url),
        database={"url": database_url},
        ledger={"journal_dir": str(folder / "journal")},
        auth={"admin_tokens": [admin_token]},
    )
    api_key = await _demo_key(database_url)
    gateway = _server(create_app(settings), host, port, http=GatewayProtocol)
    tasks = [asyncio.create_task(server.serve()) for server in simulators]
    try:
        while not all(server.started for server in simulators):
            if any(task.done() for task in tasks):
                raise SystemExit("tiergate demo: a simulated engine failed to start")
            await asyncio.sleep(0.02)
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        print(
            banner(f"http://{shown_host}:{port}/v1", fast_url, deliberate_url, api_key, admin_token),
            flush=True,
        )
        await gateway.serve(sockets=[sock])  # returns on Ctrl-C / SIGTERM
    finally:
        for server in simulators:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
