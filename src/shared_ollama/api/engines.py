"""``GET /api/v1/engines``: the engine hosts behind the service and how each is doing.

Per host: name, kind, state (``up``, ``down``, ``probing``), slots and slots in use, the models it has loaded and
how many it has installed, its last error, the requests it served and the ones that failed. With one engine (no
fleet configured) the list has that engine only, under the scheduler's name for it (``local``). Where a host runs
(its URL, credentials masked) is shown to admins only when auth is on, as in the health check.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from shared_ollama.api.deps import gateway_of, tenant_of
from shared_ollama.api.http import json_response
from shared_ollama.api.openapi import LeanRoute
from shared_ollama.backends.supervisor import EngineState
from shared_ollama.service.admission.placement import LOCAL_HOST
from shared_ollama.service.gateway import Gateway

router = APIRouter(route_class=LeanRoute)


@router.get("/api/v1/engines", tags=["operations"], summary="The engine hosts: state, slots, loaded models, errors")
async def engines(request: Request) -> Response:
    tenant = tenant_of(request)
    gateway = gateway_of(request)
    listed = _fleet(gateway) if gateway.fleet is not None else await _single(gateway)
    if gateway.tenants.auth_enabled and not tenant.is_admin:
        for entry in listed:
            _hide_location(entry)
    return json_response({"engines": listed})


def _hide_location(entry: dict[str, Any]) -> None:
    """Where the host runs, out of an entry for a caller who may not see it (its URL, also inside its last error,
    which names the host instead)."""
    url = entry.pop("url", None)
    error = entry.get("last_error")
    if isinstance(error, str):
        error = re.sub(r"\b[a-z][a-z0-9+.-]*://\S+", "the host", error)  # any URL, whoever's it is
        entry["last_error"] = error.replace(str(url), "the host") if url else error


def _fleet(gateway: Gateway) -> list[dict[str, Any]]:
    assert gateway.fleet is not None
    scheduler = gateway.admission.scheduler
    in_use = {host.name: scheduler.running_on(host.name) for host in scheduler.hosts}
    return gateway.fleet.monitor.snapshot(in_use)


async def _single(gateway: Gateway) -> list[dict[str, Any]]:
    engine = gateway.supervisor.snapshot()
    up = engine["state"] == EngineState.RUNNING
    loaded = await gateway.loaded.refresh() if up else []
    scheduler = gateway.admission.scheduler
    return [
        {
            "name": LOCAL_HOST,
            "kind": engine.get("kind"),
            "url": engine.get("url"),
            "state": "up" if up else "down",
            "slots": scheduler.slots,
            "slots_in_use": scheduler.running_on(LOCAL_HOST),
            "loaded": loaded,
            "last_error": engine.get("last_error"),
            "restarts": engine.get("restarts"),
        }
    ]
