"""Operations on the shared service: queue state, and warming or unloading a model (admin when auth is on)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from shared_ollama.api.deps import gateway_of, tenant_of
from shared_ollama.api.http import json_response
from shared_ollama.api.openapi import LeanRoute

router = APIRouter(prefix="/api/v1", tags=["operations"], route_class=LeanRoute)


@router.get("/queue/stats", summary="Queue depth, in-flight per tenant and class, waits, rejections, slots")
async def queue_stats(request: Request) -> Response:
    tenant = tenant_of(request)
    gateway = gateway_of(request)
    everyone = tenant.is_admin
    names = [*gateway.tenants.names(), tenant.name] if everyone else [tenant.name]
    snapshot = await gateway.admission.snapshot(names, everyone=everyone, shared=gateway.settings.redis_url is not None)
    snapshot["auth"] = "on" if gateway.tenants.auth_enabled else "off"
    snapshot["you"] = {"tenant": tenant.name, "role": tenant.role.value}
    return json_response(snapshot)


async def _keep_alive(request: Request, name: str, keep_alive: str | int) -> Response:
    tenant_of(request).require_admin("loading or unloading a model")
    gateway = gateway_of(request)
    show = orjson.loads(await gateway.inspect("/api/show", {"model": name}))
    path = "/api/embed" if "embedding" in (show.get("capabilities") or []) else "/api/generate"
    answer = orjson.loads(await gateway.inspect(path, {"model": name, "keep_alive": keep_alive, "stream": False}))
    return json_response({"model": name, "status": "loaded" if keep_alive else "unloaded", "engine": answer})


@router.post("/models/{name:path}/load", summary="Load a model now and keep it loaded (admin)")
async def load(request: Request, name: str) -> Response:
    return await _keep_alive(request, name, gateway_of(request).settings.engine_keep_alive)


@router.post("/models/{name:path}/unload", summary="Unload a model now (admin)")
async def unload(request: Request, name: str) -> Response:
    return await _keep_alive(request, name, 0)
