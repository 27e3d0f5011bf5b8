"""`tiergate tenants ...`, `tiergate keys ...`, `tiergate budgets ...`: against the configured database
(--config), or a running gateway's admin API (--url, with an admin token). `tiergate bill ...` is
gateway.admin.bill_cli's."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.admin.backend import AdminBackend, AdminError, DirectAdmin, RemoteAdmin
from gateway.admin.bill_cli import add_bill_commands, run_bill_command
from gateway.budgets import PERIODS, Scope
from gateway.settings import admin_token_from_environment, config_path_from_environment, load_settings
from gateway.terminal import Column, print_json, print_table
from pricing import PRIORITY_CLASSES

__all__ = ["add_admin_commands", "run_admin_command"]


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=config_path_from_environment(), help="work on its database"
    )
    parser.add_argument("--url", help="work through this running gateway's admin API instead")
    parser.add_argument(
        "--admin-token", default=admin_token_from_environment(), help="with --url ($TIERGATE_ADMIN_TOKEN)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_admin_commands(commands: Any) -> None:
    tenants = commands.add_parser("tenants", help="create, change and list tenants").add_subparsers(
        dest="action", required=True
    )
    create = tenants.add_parser("create", help="create a tenant")
    create.add_argument("tenant_id")
    create.add_argument("--name")
    create.add_argument("--class", dest="priority_class", choices=PRIORITY_CLASSES, default="standard")
    _target(create)
    change = tenants.add_parser("set", help="change a tenant's name or priority class")
    change.add_argument("tenant_id")
    change.add_argument("--name")
    change.add_argument(
        "--class",
        dest="priority_class",
        choices=PRIORITY_CLASSES,
        help="premium: served ahead of standard, priced by the price book's class rule",
    )
    _target(change)
    _target(tenants.add_parser("list", help="list tenants"))

    keys = commands.add_parser("keys", help="create, list, limit and revoke API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="create a key (its secret is printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--tiers", type=_csv, default=["fast", "deliberate"], help="comma-separated")
    create.add_argument("--models", type=_csv, help="comma-separated; default: every model")
    create.add_argument("--rpm", type=int, help="requests per minute, in each of the key's tiers")
    create.add_argument("--tpm", type=int, help="tokens per minute, in each of the key's tiers")
    create.add_argument("--expires-in-days", type=float)
    create.add_argument("--max-concurrent", type=int, help="requests in flight at once (per worker)")
    _target(create)
    listing = keys.add_parser("list", help="list keys (secrets masked)")
    listing.add_argument("--tenant")
    _target(listing)
    limits = keys.add_parser("limits", help="set a key's limits")
    limits.add_argument("key_id")
    limits.add_argument("--tiers", type=_csv, default=["fast", "deliberate"])
    limits.add_argument("--rpm", type=int)
    limits.add_argument("--tpm", type=int)
    limits.add_argument(
        "--max-concurrent", type=int, help="requests in flight at once (per worker); 0: no cap"
    )
    _target(limits)
    revoke = keys.add_parser("revoke", help="revoke a key (every replica stops accepting it within seconds)")
    revoke.add_argument("key_id")
    _target(revoke)
    _add_budget_commands(commands)
    add_bill_commands(commands)


def _add_budget_commands(commands: Any) -> None:
    budgets = commands.add_parser(
        "budgets", help="spending budgets of tenants and keys, per day, month or in total"
    ).add_subparsers(dest="action", required=True)

    def subject(parser: argparse.ArgumentParser) -> None:
        whose = parser.add_mutually_exclusive_group(required=True)
        whose.add_argument("--tenant", help="the tenant's budget (all its keys together)")
        whose.add_argument("--key", help="one key's budget (its id)")
        parser.add_argument("--period", choices=PERIODS, required=True)
        _target(parser)

    setting = budgets.add_parser("set", help="create a budget or change its limit")
    setting.add_argument("--limit", required=True, help="in the price book's currency, e.g. 25.00")
    subject(setting)
    subject(budgets.add_parser("delete", help="remove a budget"))
    listing = budgets.add_parser("list", help="a tenant's budgets and its keys', with what is spent")
    listing.add_argument("--tenant", required=True)
    _target(listing)


def run_admin_command(args: argparse.Namespace) -> None:
    if args.command == "bill":
        run_bill_command(args)
        return
    try:
        result = asyncio.run(_run(args))
    except AdminError as exc:
        sys.exit(f"tiergate {args.command} {args.action}: {exc}")
    if args.json:
        print_json(result)
    else:
        _show(args, result)


async def _backend(args: argparse.Namespace) -> AdminBackend:
    if args.url:
        if not args.admin_token:
            raise AdminError("--url needs --admin-token (or $TIERGATE_ADMIN_TOKEN)")
        return RemoteAdmin(args.url, args.admin_token)
    if args.config is None:
        raise AdminError("give --config FILE (its database is used) or --url of a running gateway")
    return await DirectAdmin.open(load_settings(args.config))


async def _run(args: argparse.Namespace) -> Any:
    backend = await _backend(args)
    try:
        if args.command == "budgets":
            return await _budgets(backend, args)
        if args.command == "tenants":
            if args.action == "create":
                return await backend.create_tenant(args.tenant_id, args.name, args.priority_class)
            if args.action == "set":
                return await backend.update_tenant(
                    args.tenant_id, name=args.name, priority_class=args.priority_class
                )
            return await backend.list_tenants()
        if args.action == "create":
            expires = None
            if args.expires_in_days is not None:
                expires = datetime.now(UTC) + timedelta(days=args.expires_in_days)
            return await backend.create_key(
                args.tenant,
                name=args.name,
                tiers=args.tiers,
                models=args.models,
                limits=_limits(args),
                expires_at=expires,
                max_concurrent=args.max_concurrent,
            )
        if args.action == "list":
            return await backend.list_keys(args.tenant)
        if args.action == "limits":
            if args.max_concurrent is None:
                return await backend.update_limits(args.key_id, _limits(args))
            # a cap alone leaves the rate limits as they are
            limits = _limits(args) if args.rpm is not None or args.tpm is not None else None
            return await backend.update_limits(args.key_id, limits, args.max_concurrent or None)
        return await backend.revoke_key(args.key_id)
    finally:
        await backend.aclose()


async def _budgets(backend: AdminBackend, args: argparse.Namespace) -> Any:
    if args.action == "list":
        return await backend.list_budgets(args.tenant)
    scope: Scope = "tenant" if args.tenant else "key"
    subject = args.tenant or args.key
    if args.action == "set":
        return await backend.set_budget(scope, subject, args.period, args.limit)
    return await backend.delete_budget(scope, subject, args.period)


def _limits(args: argparse.Namespace) -> dict[str, dict[str, int | None]]:
    if args.rpm is None and args.tpm is None:
        return {}
    return {tier: {"rpm": args.rpm, "tpm": args.tpm} for tier in args.tiers}


def _show(args: argparse.Namespace, result: Any) -> None:
    """A human's view of the result: a message for what was done, a table for what is listed."""
    if args.command == "keys" and args.action == "create":
        print(
            f"created key {result['id']} for tenant {result['tenant']}"
            f" (tiers: {', '.join(result['tiers'])})\n"
            f"secret, shown only now - store it: {result['secret']}"
        )
        return
    if isinstance(result, dict) and result.get("deleted"):
        print(f"deleted the {result['period']} budget of {result['scope']} {result['subject']}")
        return
    rows = result if isinstance(result, list) else [result]
    if args.command == "tenants":
        print_table(
            TENANT_COLUMNS,
            ([row["id"], row["name"], row["priority_class"], row["created_at"]] for row in rows),
        )
    elif args.command == "budgets":
        print_table(BUDGET_COLUMNS, (_budget_row(row) for row in rows))
    else:
        print_table(KEY_COLUMNS, (_key_row(row) for row in rows))


TENANT_COLUMNS = ("id", "name", "class", "created")
KEY_COLUMNS = ("id", "key", "tenant", "name", "state", "tiers", "models", "limits", "expires")
BUDGET_COLUMNS = (
    "scope",
    "subject",
    "period",
    "window",
    Column("limit", numeric=True),
    Column("spent", numeric=True),
    Column("reserved", numeric=True),
    Column("left", numeric=True),
    "currency",
)


def _key_row(row: dict[str, Any]) -> list[Any]:
    limits = " ".join(
        f"{tier}:rpm={_or_dash(v['rpm'])},tpm={_or_dash(v['tpm'])}" for tier, v in row["limits"].items()
    )
    return [
        row["id"],
        row["key"],
        row["tenant"],
        row.get("name") or "-",
        "REVOKED" if row["revoked"] else "active",
        ",".join(row["tiers"]),
        "all" if row.get("models") is None else ",".join(row["models"]),  # None: every model
        " ".join(filter(None, (limits, _concurrent(row.get("max_concurrent"))))) or "unlimited",
        row.get("expires_at") or "never",
    ]


def _concurrent(cap: int | None) -> str:
    return f"concurrent={cap}" if cap is not None else ""


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _budget_row(row: dict[str, Any]) -> list[Any]:
    window = row.get("window") or {}  # a budget without its standing has no window
    standing = [row.get(name) for name in ("spent", "reserved", "remaining")]
    return [
        row["scope"],
        row["subject"],
        row["period"],
        window.get("label"),
        row["limit"],
        *standing,
        row["currency"],
    ]
