"""Tenants and keys managed live, and the audit log (``/api/v1/admin/...``; admin keys only, everyone with auth off).

- ``GET/POST /api/v1/admin/tenants``, ``GET/PATCH/DELETE /api/v1/admin/tenants/{name}``: bodies are tenant specs
  as in the tenants file, without ``keys`` (PATCH is a JSON merge patch: ``null`` puts a field back to its
  default); 400 names a bad field, 404 an unknown tenant, 409 an existing one;
- ``POST /api/v1/admin/tenants/{name}/keys`` makes a key and shows it this once; ``DELETE .../keys/{id}`` deletes
  (or, for a configured key, revokes) it; listings show key ids and prefixes only;
- ``GET /api/v1/admin/audit``: who did what, when.

Changes take effect at once (``service/admission/tenant_store.py``). With replicas sharing Redis,
``TenantSyncMiddleware`` brings each request's replica up to date first.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shared_ollama.api.deps import gateway_of, tenant_of
from shared_ollama.api.errors import request_id_of
from shared_ollama.api.http import json_response, read_json
from shared_ollama.api.openapi import LeanRoute
from shared_ollama.service.admission.tenant_store import TenantStore
from shared_ollama.service.admission.tenants import Tenant

router = APIRouter(tags=["admin"], route_class=LeanRoute)
_WHAT = "managing tenants and keys"


def store_of(request: Request) -> TenantStore:
    store: TenantStore = request.app.state.tenant_store
    return store


def _admin(request: Request, what: str = _WHAT) -> Tenant:
    tenant = tenant_of(request)
    tenant.require_admin(what)
    return tenant


@router.get("/api/v1/admin/tenants", summary="Tenants in force, their key ids and prefixes, their limits (admin)")
async def list_tenants(request: Request) -> Response:
    caller = _admin(request)
    store = store_of(request)
    return json_response(
        {
            "tenants": [store.view(name) for name in store.names()],
            "auth": "on" if gateway_of(request).tenants.auth_enabled else "off",
            "shared": store.shared,
            "you": caller.name,
        }
    )


@router.post("/api/v1/admin/tenants", summary="Create a tenant (admin)", status_code=201)
async def create_tenant(request: Request) -> Response:
    caller = _admin(request)
    body = await read_json(request)
    view = await store_of(request).create(body, actor=caller.name, request_id=request_id_of(request))
    return json_response(view, status=201)


@router.get("/api/v1/admin/tenants/{name}", summary="One tenant (admin)")
async def get_tenant(request: Request, name: str) -> Response:
    _admin(request)
    return json_response(store_of(request).view(name))


@router.patch("/api/v1/admin/tenants/{name}", summary="Change a tenant: a JSON merge patch of its spec (admin)")
async def patch_tenant(request: Request, name: str) -> Response:
    caller = _admin(request)
    body = await read_json(request)
    view = await store_of(request).patch(name, body, actor=caller.name, request_id=request_id_of(request))
    return json_response(view)


@router.delete("/api/v1/admin/tenants/{name}", summary="Delete a tenant and its keys (admin)")
async def delete_tenant(request: Request, name: str) -> Response:
    caller = _admin(request)
    await store_of(request).delete(name, actor=caller.name, request_id=request_id_of(request))
    return json_response({"status": "deleted", "tenant": name})


@router.post("/api/v1/admin/tenants/{name}/keys", summary="Make a key; shown this once (admin)", status_code=201)
async def add_key(request: Request, name: str) -> Response:
    caller = _admin(request)
    made = await store_of(request).add_key(name, actor=caller.name, request_id=request_id_of(request))
    return json_response(made, status=201)


@router.delete("/api/v1/admin/tenants/{name}/keys/{key_id}", summary="Delete or revoke a key (admin)")
async def delete_key(request: Request, name: str, key_id: str) -> Response:
    caller = _admin(request)
    await store_of(request).delete_key(name, key_id, actor=caller.name, request_id=request_id_of(request))
    return json_response({"status": "deleted", "tenant": name, "id": key_id})


@router.get("/api/v1/admin/audit", summary="Admin actions: who, what, when, newest first (admin)")
async def audit(
    request: Request, limit: int = 100, since: float | None = None, actor: str | None = None, action: str | None = None
) -> Response:
    _admin(request, "reading the audit log")
    entries = await store_of(request).audit.query(limit=limit, since=since, actor=actor, action=action)
    return json_response({"entries": entries})


class TenantSyncMiddleware:
    """Replicas sharing Redis: before each HTTP request, the tenants are brought up to date
    (``TenantStore.sync``: one ``GET`` of the shared version, a reload when another replica changed them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            store: TenantStore | None = getattr(scope["app"].state, "tenant_store", None)
            if store is not None:
                await store.sync()
        await self.app(scope, receive, send)
