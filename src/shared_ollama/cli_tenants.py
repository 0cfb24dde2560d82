"""``shared-ollama tenants ls|add|rm|key add|key rm|limits``: tenants and keys through a running service's admin API.

Talks to the service found as ``cli_http`` says (``--url`` anywhere) with the admin key from ``--api-key`` or
``SHARED_OLLAMA_ADMIN_KEY`` (none: the service must have auth off). A key made by ``key add`` (or ``add --key``)
is printed once; the service keeps only its digest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any
from urllib.parse import quote

from shared_ollama.cli_http import ADMIN_KEY_ENV, Service, ServiceError, add_connection, service_from
from shared_ollama.settings import Settings

JsonDict = dict[str, Any]
TENANTS = "/api/v1/admin/tenants"
TIMEOUT = 30.0
"""Seconds per request step unless ``--timeout`` says otherwise: admin calls are quick."""
_RESET = frozenset({"default", "none", "null"})


def _tenant(name: str) -> str:
    return f"{TENANTS}/{quote(name, safe='')}"


def _value(text: str) -> Any:
    if text.lower() in _RESET:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _limits(pairs: list[str]) -> JsonDict:
    limits: JsonDict = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ServiceError(f"a limit is name=value (value 'default' resets it), got {pair!r}")
        limits[name.strip()] = _value(value.strip())
    return limits


def _keys(tenant: JsonDict) -> str:
    return ", ".join(f"{k['id']} ({k['prefix']}…, {k['source']})" for k in tenant.get("keys", [])) or "-"


def _print_key(made: JsonDict) -> None:
    print(f"key for {made['tenant']} (id {made['id']}), shown only now:")
    print(made["key"])


def _ls(service: Service, args: argparse.Namespace) -> None:
    listing = service.json("GET", TENANTS)
    print(f"auth {listing.get('auth')}, shared {'yes' if listing.get('shared') else 'no'}")
    for tenant in listing.get("tenants", []):
        print(f"{tenant['name']}\t{tenant['role']}\t{tenant['source']}\tkeys: {_keys(tenant)}")


def _add(service: Service, args: argparse.Namespace) -> None:
    body: JsonDict = {"name": args.name, "role": args.role}
    if args.limit:
        body["limits"] = _limits(args.limit)
    if args.cache:
        body["cache"] = args.cache
    service.json("POST", TENANTS, body)
    print(f"created {args.name}")
    if args.key:
        _print_key(service.json("POST", f"{_tenant(args.name)}/keys"))


def _rm(service: Service, args: argparse.Namespace) -> None:
    service.json("DELETE", _tenant(args.name))
    print(f"deleted {args.name}")


def _key(service: Service, args: argparse.Namespace) -> None:
    if args.key_cmd == "add":
        _print_key(service.json("POST", f"{_tenant(args.name)}/keys"))
    else:
        service.json("DELETE", f"{_tenant(args.name)}/keys/{quote(args.id, safe='')}")
        print(f"deleted key {args.id} of {args.name}")


def _show_limits(service: Service, args: argparse.Namespace) -> None:
    if args.set:
        tenant = service.json("PATCH", _tenant(args.name), {"limits": _limits(args.set)})
    else:
        tenant = service.json("GET", _tenant(args.name))
    overrides = tenant.get("limits", {})
    for name, value in tenant.get("limits_in_force", {}).items():
        source = "tenant" if overrides.get(name) is not None else "default"
        print(f"{name}\t{value}\t({source})")


def run_tenants(args: argparse.Namespace, service: Service) -> int:
    try:
        {"ls": _ls, "add": _add, "rm": _rm, "key": _key, "limits": _show_limits}[args.tenants_cmd](service, args)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_tenant_commands(sub: Any) -> None:
    """Add ``tenants ls|add|rm|key add|key rm|limits`` to the CLI."""
    tenants = sub.add_parser("tenants", help="tenants and keys of a running service (admin API)")
    add_connection(tenants)
    tenants_sub = tenants.add_subparsers(dest="tenants_cmd", required=True)

    def leaf(parent: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_text)
        add_connection(parser)
        return parser

    leaf(tenants_sub, "ls", "tenants in force, their key ids and prefixes")
    add = leaf(tenants_sub, "add", "create a tenant")
    add.add_argument("name")
    add.add_argument("--role", choices=("user", "admin"), default="user")
    add.add_argument("--limit", action="append", metavar="NAME=VALUE", help="a limit override (repeatable)")
    add.add_argument("--cache", choices=("off", "exact", "semantic"), help="the tenant's default cache mode")
    add.add_argument("--key", action="store_true", help="also make a key (printed once)")
    leaf(tenants_sub, "rm", "delete a tenant and its keys").add_argument("name")
    key = leaf(tenants_sub, "key", "make or delete a tenant's keys")
    key_sub = key.add_subparsers(dest="key_cmd", required=True)
    leaf(key_sub, "add", "make a key (printed once)").add_argument("name")
    key_rm = leaf(key_sub, "rm", "delete (or revoke a configured) key")
    key_rm.add_argument("name")
    key_rm.add_argument("id")
    limits = leaf(tenants_sub, "limits", "show a tenant's limits, or set some (VALUE 'default' resets one)")
    limits.add_argument("name")
    limits.add_argument("set", nargs="*", metavar="NAME=VALUE")
    tenants.set_defaults(func=_run)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    return run_tenants(args, service_from(args, settings, os.environ, key_env=ADMIN_KEY_ENV, timeout=TIMEOUT))
