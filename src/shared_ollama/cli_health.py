"""``shared-ollama health [--wait SECONDS] [--pid PID]``: is the service up, and is its engine?

Without ``--wait``: one look at ``/api/v1/health``; exit 0 when healthy, 1 otherwise. With ``--wait``: look again
until it is healthy, for at most that long, then print ``ready on <url>`` (exit 0) or why not (exit 1); with
``--pid``, stop looking (silently, exit 1) as soon as that process is gone — ``scripts/core/start.sh`` waits this
way for the server it starts, so "ready" is printed only once the port answers. With ``--pid``, a healthy answer
counts only while that process lives and only from a service that started after it (its ``uptime_seconds``): a
service already running on the port (another instance, while ours fails to bind) is not taken for ours.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import psutil

from shared_ollama.cli_http import API_KEY_ENV, Service, ServiceError, add_connection, field_object, service_from
from shared_ollama.settings import Settings

JsonDict = dict[str, Any]
INTERVAL = 0.5
"""Seconds between two looks while waiting."""
CLOCK_SLACK = 2.0
"""Seconds a service may seem to have started before the process ``--pid`` names and still count as that
process's: the process's start time is known to about a second (boot time in whole seconds)."""


def look(service: Service) -> tuple[bool, str]:
    """(healthy, what to say): one request to ``/api/v1/health``."""
    healthy, said, _ = _look(service)
    return healthy, said


def _look(service: Service) -> tuple[bool, str, float | None]:
    """(healthy, what to say, the service's uptime in seconds when its answer gives one)."""
    try:
        body = service.json("GET", "/api/v1/health")
    except ServiceError as exc:
        if exc.status == 503:
            return False, f"degraded: {exc}", None
        return False, str(exc), None
    engine = field_object(body, "engine")
    loaded = ", ".join(str(m) for m in engine.get("loaded_models") or []) or "none"
    if body.get("status") != "healthy":
        return False, f"{body.get('status')}: {body.get('reason', '')}", None
    uptime = body.get("uptime_seconds")
    known = float(uptime) if isinstance(uptime, int | float) and not isinstance(uptime, bool) else None
    return True, f"healthy: engine {body.get('ollama_status')}, models loaded: {loaded}", known


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None when it is gone (or a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:  # someone else's process: alive, start time unknown
        return 0.0


def wait_ready(
    service: Service,
    limit: float,
    pid: int | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
    started: Callable[[int], float | None] = process_started,
    now: Callable[[], float] = time.time,
) -> tuple[bool | None, str]:
    """Look until healthy, at most ``limit`` seconds: (True, status), (False, the last reason), or (None, "") when
    process ``pid`` ended first. With ``pid``, a healthy answer counts only while the process lives and when the
    service started after it (``now() - uptime`` against ``started(pid)``): else it is another instance's."""
    deadline = clock() + limit
    healthy, said, uptime = _look(service)
    for _ in range(int(limit / INTERVAL) + 2):
        if pid is not None:
            began = started(pid)
            if began is None:
                return None, ""
            if healthy and uptime is not None and now() - uptime < began - CLOCK_SLACK:
                healthy = False
                said = f"the service answering there started before process {pid}: another instance has the port"
        if healthy:
            return True, said
        if clock() >= deadline:
            break
        pause(INTERVAL)  # the service starts on its own; this only paces the looks
        healthy, said, uptime = _look(service)
    return healthy or False, said


def run_health(args: argparse.Namespace, service: Service, out: TextIO, err: TextIO) -> int:
    if args.wait is None:
        if args.json:
            try:
                out.write(json.dumps(service.json("GET", "/api/v1/health"), indent=2) + "\n")
            except ServiceError as exc:
                err.write(f"error: {exc}\n")
                return 1
            return 0
        healthy, said = look(service)
        (out if healthy else err).write(f"{service.url}: {said}\n")
        return 0 if healthy else 1
    ready, said = wait_ready(service, args.wait, args.pid)
    if ready is None:
        return 1
    if ready:
        out.write(f"ready on {service.url}\n")
        return 0
    err.write(f"not ready on {service.url} after {args.wait:g} s: {said}\n")
    return 1


def add_health_command(sub: Any) -> None:
    health = sub.add_parser("health", help="is the service up (and its engine)? --wait to wait for it")
    add_connection(health)
    health.add_argument("--wait", type=float, metavar="SECONDS", help="look again until healthy, this long at most")
    health.add_argument(
        "--pid", type=int, help="while waiting: the server's process; give up when it is gone, trust no older service"
    )
    health.add_argument("--json", action="store_true", help="the health answer as JSON")
    health.set_defaults(func=_run)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    service = service_from(args, settings, os.environ, key_env=API_KEY_ENV, timeout=5.0)
    return run_health(args, service, sys.stdout, sys.stderr)
