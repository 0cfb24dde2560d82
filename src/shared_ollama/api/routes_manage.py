"""Operations on the shared service: the queue's state."""

from __future__ import annotations

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


@router.get("/cache/stats", summary="Response cache: hits, misses, semantic hits, hit rate, entries, bytes")
async def cache_stats(request: Request) -> Response:
    tenant_of(request)
    caching = gateway_of(request).caching
    if caching is None:
        return json_response({"enabled": False})
    stats = await caching.cache.stats()
    config = caching.cache.config
    return json_response(
        {
            "enabled": config.enabled,
            "scope": config.scope,
            "ttl_seconds": config.ttl_seconds,
            "semantic_threshold": config.semantic_threshold,
            "store": "redis" if config.redis_url else "memory",
            **stats,
        }
    )


@router.delete("/cache", summary="Purge cached responses, optionally of one tenant or model (admin)")
async def cache_purge(request: Request) -> Response:
    tenant_of(request).require_admin("purging the cache")
    caching = gateway_of(request).caching
    tenant = request.query_params.get("tenant") or None
    model = request.query_params.get("model") or None
    removed = await caching.cache.purge(tenant=tenant, model=model) if caching is not None else 0
    return json_response({"removed": removed, "tenant": tenant, "model": model})
