"""The tiergate configurations of the hot-path comparison (bench/overhead.py --hot-path), each a process of
its own with one worker, for each tiergate build measured:

    minimal     one key in SQLite (no limits), no price book: the relay and the key check
    production  keys in SQLite with limits (rpm, tpm), a tenant budget, a price book, the ledger in SQLite
                (journal fsync on, as by default), a log line per request (server.log_level's default)
    shared      the same, with limits and budgets in Redis (a random prefix, failure_mode closed) and keys and
                ledger in PostgreSQL (a schema of its own); both removed at the end

Tenants, keys and budgets are made with the build's own CLI, as an operator would. The limits are real but
far above anything one worker can reach, so that no request is refused: a refusal invalidates a row.
Every gateway's door is `server.concurrency: fixed` with `max_concurrent_requests: 1024` unless --door and
--max-concurrent-requests say otherwise: wrk's closed loop at c=50 saturates one worker, which the adaptive
door (the default) answers by shrinking its limit below 50 and refusing most requests with 503, and a
refused row measures nothing; 1,024 leaves room for a wave of 1,000 streams.
Besides the bench's model, each serves `PACED_MODEL` (the same upstream, which streams that model's tokens on
a clock) for the waves of concurrent streams.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from overheadkit import admin_cli, chat, procs, rediskeys, servers
from overheadkit.chat import MODEL, Mode
from overheadkit.pgschema import PostgresSchema
from overheadkit.procs import ManagedProcess, StartupError

__all__ = ["CONFIGS", "PACED_MODEL", "Build", "Gateway", "Setup", "start_gateway"]

MINIMAL, PRODUCTION, SHARED = "minimal", "production", "shared"
CONFIGS = (MINIMAL, PRODUCTION, SHARED)
PACED_MODEL = "llama-3.1-8b"
TENANT, TIER = "bench", "fast"
# Far above one worker's reach (a few thousand requests a second is ~10^5 a minute; a 1,000-token stream
# reserves 10^3 tokens): real limits that never refuse.
KEY_RPM, KEY_TPM = 100_000_000, 10_000_000_000
DAILY_BUDGET = "1000000.00"  # USD a day for the tenant; the whole run spends well under a dollar
RATE_LIMIT_HEADER = "x-ratelimit-limit-requests"
# The bench's own price book: both models it serves, fast tier only (a book must price what is offered).
PRICE_BOOK = {
    "currency": "USD",
    "versions": [
        {
            "effective_from": "2026-01-01",
            "prices": {
                "fast": {
                    MODEL: {"input": "0.05", "cached_input": "0.01", "output": "0.20", "request": "0"},
                    PACED_MODEL: {"input": "0.04", "cached_input": "0.01", "output": "0.16", "request": "0"},
                }
            },
        }
    ],
}


@dataclass(frozen=True)
class Build:
    """A tiergate build: its CLI and the label its columns carry."""

    label: str
    cmd: list[str]


@dataclass(frozen=True)
class Setup:
    """What every gateway of a run shares: the stores of the shared configuration, and the door."""

    redis_url: str
    postgres_url: str  # a server; each shared gateway gets a schema of its own in it
    # server.concurrency and server.max_concurrent_requests (see hotpath_cli's --door)
    concurrency: str
    max_concurrent: int


@dataclass(frozen=True)
class Gateway:
    name: str
    config: str
    proc: ManagedProcess
    headers: dict[str, str]


def gateway_config(
    config: str,
    ports: tuple[int, int],
    state: Path,
    setup: Setup,
    stores: tuple[str | None, dict[str, str] | None],
) -> dict[str, Any]:
    """One gateway's config. `ports`: its own and the upstream's; `stores`: (database URL, redis settings)
    of a shared gateway."""
    (port, upstream_port), (schema_url, redis) = ports, stores
    upstream = f"http://127.0.0.1:{upstream_port}"
    data = servers.tiergate_config(port, upstream_port)
    data["server"].update(concurrency=setup.concurrency, max_concurrent_requests=setup.max_concurrent)
    data["pools"] = {"fast": {"replicas": [upstream]}}
    data["models"] = {
        m: {"default_tier": TIER, "tiers": {TIER: {"pool": "fast"}}} for m in (MODEL, PACED_MODEL)
    }
    data["auth"] = {"mode": "keys", "admin_tokens": [f"bench-admin-{secrets.token_hex(16)}"]}
    data["database"] = {"url": schema_url or f"sqlite:///{state / 'tiergate.sqlite3'}"}
    if config == MINIMAL:
        return data
    data["pricing"] = {"book": str(servers.write_json(state / "prices.yaml", PRICE_BOOK))}
    data["ledger"] = {"journal_dir": str(state / "journal")}
    if redis is not None:
        data["redis"] = {**redis, "failure_mode": "closed"}
    return data


def _setup_tenant(build: Build, config: str, config_path: Path, state: Path) -> dict[str, str]:
    """The tenant, its key (limits unless minimal) and its budget (unless minimal); the key's headers."""
    cli = admin_cli.tiergate_cli
    cli(build.cmd, ["tenants", "create", TENANT, "--config", str(config_path)], state)
    limits = None if config == MINIMAL else (KEY_RPM, KEY_TPM)
    key = admin_cli.create_key(
        build.cmd, config_path, state, tenant=TENANT, name="bench", tiers=TIER, limits=limits
    )
    if config != MINIMAL:
        budget = ["budgets", "set", "--tenant", TENANT, "--period", "daily", "--limit", DAILY_BUDGET]
        cli(build.cmd, [*budget, "--config", str(config_path)], state)
    return {"Authorization": f"Bearer {key}"}


def _stores(
    stack: contextlib.ExitStack, config: str, stores: Setup
) -> tuple[str | None, dict[str, str] | None]:
    """A fresh PostgreSQL schema and Redis prefix for a shared gateway, both removed when the stack closes
    (registered before the gateway starts, so they go after it has stopped)."""
    if config != SHARED:
        return None, None
    try:
        rediskeys.count(stores.redis_url, "tiergate-bench-probe:")
    except redis.RedisError as exc:
        raise StartupError(f"Redis at {stores.redis_url} unreachable: {exc}") from exc
    prefix = f"tiergate-bench:{secrets.token_hex(6)}:"
    stack.callback(_delete_redis_keys, stores.redis_url, prefix)
    schema_url = stack.enter_context(PostgresSchema(stores.postgres_url))
    return schema_url, {"url": stores.redis_url, "prefix": prefix}


def _delete_redis_keys(url: str, prefix: str) -> None:
    try:
        rediskeys.delete(url, prefix)
    except redis.RedisError as exc:
        print(f"could not delete the Redis keys under {prefix!r}: {exc}", file=sys.stderr)


def start_gateway(
    stack: contextlib.ExitStack,
    build: Build,
    config: str,
    name: str,
    upstream: ManagedProcess,
    dirs: tuple[Path, Path],
    setup: Setup,
) -> Gateway:
    """Set up the configuration's stores and tenant, start its gateway (stopped with the stack), wait until
    it is ready and check it does what the configuration says. `dirs`: (work dir, logs dir)."""
    work_dir, logs_dir = dirs
    state = work_dir / name
    state.mkdir(parents=True)
    port, upstream_port = procs.free_port(), int(upstream.base_url.rsplit(":", 1)[1])
    schema_url, redis_settings = _stores(stack, config, setup)
    data = gateway_config(config, (port, upstream_port), state, setup, (schema_url, redis_settings))
    config_path = servers.write_json(state / "tiergate.yaml", data)
    headers = _setup_tenant(build, config, config_path, state)
    # minimal: as bench/overhead.py's tiergate, no line per request; the others: the config's default
    log_level = "warning" if config == MINIMAL else None
    proc = stack.enter_context(
        procs.managed(
            name,
            servers.tiergate_argv(build.cmd, config_path, log_level),
            base_url=f"http://127.0.0.1:{port}",
            log_path=logs_dir / f"tiergate-{name}.log",
            env=admin_cli.clean_env(),
            cwd=state,
        )
    )
    proc.wait_ready("/readyz", 60.0)
    gateway = Gateway(name, config, proc, headers)
    problem = verify(gateway, redis_settings)
    if problem is not None:
        raise StartupError(f"{name}: verification failed: {problem}")
    return gateway


def verify(gateway: Gateway, redis_settings: dict[str, str] | None) -> str | None:
    """None when the gateway answers and enforces what its configuration says: keys (401 without one);
    beyond minimal, limits (rate-limit headers) and prices (`usage.cost`); shared, state under its prefix."""
    base, headers = gateway.proc.base_url, gateway.headers
    limited = gateway.config != MINIMAL
    required = (RATE_LIMIT_HEADER,) if limited else ()
    for mode in Mode:
        if (problem := chat.verify(base, headers, mode, required_headers=required)) is not None:
            return f"{mode.value}: {problem}"
    if (problem := chat.refuses_anonymous(base)) is not None:
        return problem
    if limited:
        body = chat.request_body(Mode.NON_STREAM)
        sent = {"Content-Type": "application/json", **headers}
        usage = httpx.post(base + chat.CHAT_PATH, content=body, headers=sent, timeout=30).json()["usage"]
        if "cost" not in usage:
            return f"no usage.cost in a priced answer: {usage}"
    if redis_settings is not None and rediskeys.count(redis_settings["url"], redis_settings["prefix"]) == 0:
        return f"nothing under {redis_settings['prefix']!r} in Redis: limits and budgets are not there"
    return None


def builds(current: Sequence[str], baseline: Sequence[str] | None) -> list[Build]:
    found = [Build("", list(current))]
    if baseline is not None:
        found.append(Build("base", list(baseline)))
    return found
