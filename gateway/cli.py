"""The `tiergate` command: serve, demo, simulate."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from gateway.admin.cli import add_admin_commands, run_admin_command
from gateway.engines_cli import add_engines_command, run_engines_command
from gateway.logs import configure_logging
from gateway.probes.cli import add_probe_command, run_probe_command
from gateway.settings import (
    CONFIG_ENV,
    ConfigError,
    config_path_from_environment,
    export_config_path,
    export_log_level,
    export_metrics_dir,
    load_settings,
)
from gateway.terminal import exit_on_broken_pipe

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiergate", description="OpenAI-compatible inference gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway from a config file")
    serve.add_argument("--config", type=Path, default=config_path_from_environment(), help="YAML config file")
    serve.add_argument("--host", help="overrides server.host")
    serve.add_argument("--port", type=int, help="overrides server.port")
    serve.add_argument("--workers", type=int, help="overrides server.workers")
    serve.add_argument("--log-level", help="overrides server.log_level")

    demo = commands.add_parser("demo", help="gateway + simulated fast and deliberate pools, one process")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)

    simulate = commands.add_parser("simulate", help="run a simulated vLLM engine")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8100)
    simulate.add_argument(
        "--profile",
        default="fast",
        help="fast (speculative decoding), deliberate (reasoning) or plain (thinks in its text when told to)",
    )
    simulate.add_argument("--model", action="append", help="served model name (repeatable)")
    simulate.add_argument(
        "--zero-latency", action="store_true", help="no simulated latency (overhead benchmarks)"
    )
    simulate.add_argument("--seed", type=int)
    simulate.add_argument("--error-rate", type=float, help="fraction of requests answered with an error")
    simulate.add_argument("--max-model-len", type=int)
    simulate.add_argument(
        "--logprob-noise", type=float, help="how little a task answer's logprobs tell of its correctness"
    )
    simulate.add_argument("--skill-base", type=float, help="the skill model's accuracy without reasoning")
    simulate.add_argument("--log-level", default="warning")

    add_admin_commands(commands)
    add_probe_command(commands)
    add_engines_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        _run(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit where it is not
    except BrokenPipeError:
        exit_on_broken_pipe()


def _run(args: argparse.Namespace) -> None:
    try:
        if args.command == "serve":
            _serve(args)
        elif args.command == "demo":
            _demo(args)
        elif args.command == "simulate":
            _simulate(args)
        elif args.command == "probe":
            run_probe_command(args)
        elif args.command == "engines":
            run_engines_command(args)
        else:
            run_admin_command(args)
    except ConfigError as exc:
        sys.exit(f"tiergate: {exc}")
    except KeyboardInterrupt:
        pass


def _logging(level: str, *, off_loop: bool = False) -> None:
    configure_logging(level, off_loop=off_loop)


def _open_files() -> None:
    from gateway.http.connections import raise_open_file_limit

    before, after = raise_open_file_limit()
    log = logging.getLogger("tiergate")
    if after > before:
        log.info("open-file limit raised from %d to %d (the hard limit)", before, after)
    else:
        log.info("open-file limit: %d", after)


def _serve(args: argparse.Namespace) -> None:
    if args.config is None:
        sys.exit(f"tiergate serve: give --config FILE (or set {CONFIG_ENV})")
    server: dict[str, Any] = {
        key: value
        for key, value in (
            ("host", args.host),
            ("port", args.port),
            ("workers", args.workers),
            ("log_level", args.log_level),
        )
        if value is not None
    }
    settings = load_settings(args.config)
    if server:
        settings = load_settings(args.config, server={**settings.server.model_dump(), **server})
    _logging(settings.server.log_level, off_loop=True)
    _open_files()
    from gateway.http.connections import GatewayProtocol
    from gateway.inference.catalog import Catalog
    from gateway.state import price_book

    # a price book that cannot price every offer stops the start here, with its message, not in a worker
    price_book(settings, Catalog(settings.models, settings.tiers.reasoning_effort))
    options: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "log_config": None,
        "access_log": False,  # the gateway logs each inference request itself
        "timeout_graceful_shutdown": 30,
        "http": GatewayProtocol,  # deadlines for a request's headers and body, a bound on connections
    }
    if settings.server.workers == 1:
        from gateway.app import create_app

        uvicorn.run(create_app(settings, server_process=True), **options)
        return
    if not settings.redis.url:
        logging.getLogger("tiergate").warning(
            "%d worker processes without redis.url: each keeps its own rate limits and budgets, so a key"
            " gets up to %d times its limits. Configure Redis to share them.",
            settings.server.workers,
            settings.server.workers,
        )
    # worker processes rebuild the settings from the same file and environment; their metrics go to files
    # that /metrics aggregates, whichever worker answers it
    export_config_path(args.config)
    export_log_level(settings.server.log_level)
    with tempfile.TemporaryDirectory(prefix="tiergate-metrics-") as metrics_dir:
        export_metrics_dir(Path(metrics_dir))
        uvicorn.run(
            "gateway.app:app_from_environment", factory=True, workers=settings.server.workers, **options
        )


def _demo(args: argparse.Namespace) -> None:
    from gateway.demo import listening_socket, run_demo

    # the port first, before a banner or a log line: a busy one is one line, not a failure among the logs
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            sys.exit(f"tiergate demo: port {args.port} is busy: use --port N")
        sys.exit(f"tiergate demo: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    _logging("info")
    _open_files()
    with sock:
        asyncio.run(run_demo(args.host, args.port, sock))


def _simulate(args: argparse.Namespace) -> None:
    from engines.simulator import create_simulator_app, profile

    overrides: dict[str, Any] = {}
    if args.model:
        overrides["models"] = tuple(args.model)
    if args.zero_latency:
        overrides["zero_latency"] = True
    for name in ("seed", "error_rate", "max_model_len", "logprob_noise", "skill_base"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    try:
        config = profile(args.profile, **overrides)
    except ValueError as exc:
        sys.exit(f"tiergate simulate: {exc}")
    _logging(args.log_level)
    uvicorn.run(
        create_simulator_app(config), host=args.host, port=args.port, log_config=None, access_log=False
    )
