"""``shared-ollama tenants ls|add|rm|key add|key rm|limits``: tenants and keys through a running service's admin API.

Talks to ``--url`` (default ``http://127.0.0.1:8000``) with the admin key from ``--api-key`` or
``SHARED_OLLAMA_ADMIN_KEY`` (none: the service must have auth off). A key made by ``key add`` (or ``add --key``)
is printed once; the service keeps only its digest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

JsonDict = dict[str, Any]
DEFAULT_URL = "http://127.0.0.1:8000"
TENANTS = "/api/v1/admin/tenants"
_RESET = frozenset({"default", "none", "null"})


class AdminError(Exception):
    pass


def _call(args: argparse.Namespace, method: str, path: str, body: JsonDict | None = None) -> JsonDict:
    headers = {"Content-Type": "application/json"}
    key = args.api_key or os.environ.get("SHARED_OLLAMA_ADMIN_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(args.url.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            detail = exc.reason
        raise AdminError(f"{exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(f"cannot reach the service at {args.url}: {reason}") from None
    return json.loads(raw) if raw else {}


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
            raise AdminError(f"a limit is name=value (value 'default' resets it), got {pair!r}")
        limits[name.strip()] = _value(value.strip())
    return limits


def _keys(tenant: JsonDict) -> str:
    return ", ".join(f"{k['id']} ({k['prefix']}…, {k['source']})" for k in tenant.get("keys", [])) or "-"


def _print_key(made: JsonDict) -> None:
    print(f"key for {made['tenant']} (id {made['id']}), shown only now:")
    print(made["key"])


def _ls(args: argparse.Namespace) -> None:
    listing = _call(args, "GET", TENANTS)
    print(f"auth {listing.get('auth')}, shared {'yes' if listing.get('shared') else 'no'}")
    for tenant in listing.get("tenants", []):
        print(f"{tenant['name']}\t{tenant['role']}\t{tenant['source']}\tkeys: {_keys(tenant)}")


def _add(args: argparse.Namespace) -> None:
    body: JsonDict = {"name": args.name, "role": args.role}
    if args.limit:
        body["limits"] = _limits(args.limit)
    if args.cache:
        body["cache"] = args.cache
    _call(args, "POST", TENANTS, body)
    print(f"created {args.name}")
    if args.key:
        _print_key(_call(args, "POST", f"{_tenant(args.name)}/keys"))


def _rm(args: argparse.Namespace) -> None:
    _call(args, "DELETE", _tenant(args.name))
    print(f"deleted {args.name}")


def _key(args: argparse.Namespace) -> None:
    if args.key_cmd == "add":
        _print_key(_call(args, "POST", f"{_tenant(args.name)}/keys"))
    else:
        _call(args, "DELETE", f"{_tenant(args.name)}/keys/{quote(args.id, safe='')}")
        print(f"deleted key {args.id} of {args.name}")


def _show_limits(args: argparse.Namespace) -> None:
    if args.set:
        tenant = _call(args, "PATCH", _tenant(args.name), {"limits": _limits(args.set)})
    else:
        tenant = _call(args, "GET", _tenant(args.name))
    overrides = tenant.get("limits", {})
    for name, value in tenant.get("limits_in_force", {}).items():
        source = "tenant" if overrides.get(name) is not None else "default"
        print(f"{name}\t{value}\t({source})")


def run_tenants(args: argparse.Namespace) -> int:
    try:
        {"ls": _ls, "add": _add, "rm": _rm, "key": _key, "limits": _show_limits}[args.tenants_cmd](args)
    except AdminError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _connection(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--url``, ``--api-key`` and ``--timeout``, accepted before or after the subcommand."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS  # a subcommand's copy overrides only when given

    parser.add_argument("--url", default=default(DEFAULT_URL), help=f"the running service (default {DEFAULT_URL})")
    parser.add_argument("--api-key", default=default(None), help="an admin key (default: $SHARED_OLLAMA_ADMIN_KEY)")
    parser.add_argument("--timeout", type=float, default=default(30.0), help="seconds per request (default 30)")


def add_tenant_commands(sub: Any) -> None:
    """Add ``tenants ls|add|rm|key add|key rm|limits`` to the CLI."""
    tenants = sub.add_parser("tenants", help="tenants and keys of a running service (admin API)")
    _connection(tenants, top=True)
    tenants_sub = tenants.add_subparsers(dest="tenants_cmd", required=True)

    def leaf(parent: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_text)
        _connection(parser, top=False)
        return parser

    leaf(tenants_sub, "ls", "tenants in force, their key ids and prefixes")
    add = leaf(tenants_sub, "add", "create a tenant")
    add.add_argument("name")
    add.add_argument("--role", choices=("user", "admin"), default="user")
    add.add_argument("--limit", action="append", metavar="NAME=VALUE", help="a limit override (repeatable)")
    add.add_argument("--cache", choices=("off", "exact", "semantic"), help="the tenant's default cache mode")
    add.add_argument("--key", action="store_true", help="also make a key (printed once)")
    leaf(tenants_sub, "rm", "delete a tenant and its keys").add_argument("name")
    key = tenants_sub.add_parser("key", help="make or delete a tenant's keys")
    key_sub = key.add_subparsers(dest="key_cmd", required=True)
    leaf(key_sub, "add", "make a key (printed once)").add_argument("name")
    key_rm = leaf(key_sub, "rm", "delete (or revoke a configured) key")
    key_rm.add_argument("name")
    key_rm.add_argument("id")
    limits = leaf(tenants_sub, "limits", "show a tenant's limits, or set some (VALUE 'default' resets one)")
    limits.add_argument("name")
    limits.add_argument("set", nargs="*", metavar="NAME=VALUE")
    tenants.set_defaults(func=lambda settings, args: run_tenants(args))
