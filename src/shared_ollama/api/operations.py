"""Operating the shared service: health, the queue, the response cache, metrics, analytics, the status page.

- ``/api/v1/health``: service and engine health (503 when degraded), for load balancers and probes;
- ``/api/v1/queue/stats``, ``/api/v1/cache/stats``, ``DELETE /api/v1/cache``: the queue's and the cache's state,
  and purging the cache (admin);
- ``/metrics`` (Prometheus), ``/api/v1/metrics`` (JSON), ``/api/v1/performance/stats``, ``/api/v1/analytics``:
  the figures (metrics are admin-only with auth on; a user reads only its own analytics);
- ``/dashboard``: the status page over those endpoints.
"""

from __future__ import annotations

import math
import time
from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from shared_ollama import __version__
from shared_ollama.api.deps import gateway_of, tenant_of
from shared_ollama.api.http import json_response
from shared_ollama.api.openapi import LeanRoute
from shared_ollama.backends.supervisor import EngineState
from shared_ollama.errors import Forbidden, SharedOllamaError
from shared_ollama.service.observability.metrics import CONTENT_TYPE
from shared_ollama.service.observability.telemetry import Telemetry

router = APIRouter(route_class=LeanRoute)
# The API docs' groups: health is listed with the service API, the rest under operations.
_SERVICE_TAGS = ["service"]
_OPERATIONS_TAGS = ["operations"]


def telemetry_of(request: Request) -> Telemetry:
    telemetry: Telemetry = request.app.state.telemetry
    return telemetry


def _operator(request: Request, what: str) -> None:
    """Figures about every tenant: an admin's when auth is on (anyone's when it is off)."""
    tenant_of(request).require_admin(what)


# ---------------------------------------------------------------- health

_INTERNAL = ("url", "pid")
"""Engine fields that locate the engine on the machine: shown to admins only when auth is on."""


def _sees_internals(request: Request) -> bool:
    """Whether the caller may see where the engine runs: anyone with auth off, else admins only (health stays
    open to monitors without a key, so a missing or wrong key only hides those fields)."""
    if not gateway_of(request).tenants.auth_enabled:
        return True
    try:
        return tenant_of(request).is_admin
    except SharedOllamaError:
        return False


def _public_engine(engine: dict[str, object]) -> dict[str, object]:
    """The engine's snapshot without its URL and PID (nor the URL inside its last error)."""
    url = str(engine.get("url") or "")
    shown = {k: v for k, v in engine.items() if k not in _INTERNAL}
    if url and isinstance(shown.get("last_error"), str):
        shown["last_error"] = str(shown["last_error"]).replace(url, "the engine")
    return shown


@router.get("/api/v1/health", tags=_SERVICE_TAGS, summary="Service and engine health (503 when degraded)")
async def health(request: Request) -> Response:
    gateway = gateway_of(request)
    engine = gateway.supervisor.snapshot()
    if not _sees_internals(request):
        engine = _public_engine(engine)
    healthy = engine["state"] == EngineState.RUNNING
    loaded = await gateway.loaded.refresh() if healthy else []
    live = gateway.live_state()
    body = {
        "status": "healthy" if healthy else "degraded",
        "ollama_status": engine["state"],
        "engine": {**engine, "loaded_models": loaded, "models": gateway.loaded.models if healthy else []},
        "queue": {"depth": live.queue_depth, "slots_total": live.slots_total, "slots_in_use": live.slots_in_use},
        "service_version": __version__,
        "uptime_seconds": round(time.time() - request.app.state.started_at, 3),
        "default_model": gateway.settings.default_model,
    }
    if not healthy:
        body["reason"] = engine["last_error"] or f"engine is {engine['state']}"
    response = json_response(body, status=200 if healthy else 503)
    if not healthy:  # like every 503 here: when to look again
        response.headers["Retry-After"] = str(math.ceil(SharedOllamaError.default_retry_after))
    return response


# ---------------------------------------------------------------- the queue and the cache


@router.get(
    "/api/v1/queue/stats",
    tags=_OPERATIONS_TAGS,
    summary="Queue depth, in-flight per tenant and class, waits, rejections, slots",
)
async def queue_stats(request: Request) -> Response:
    tenant = tenant_of(request)
    gateway = gateway_of(request)
    everyone = tenant.is_admin
    names = [*gateway.tenants.names(), tenant.name] if everyone else [tenant.name]
    snapshot = await gateway.admission.snapshot(names, everyone=everyone, shared=gateway.settings.redis_url is not None)
    snapshot["auth"] = "on" if gateway.tenants.auth_enabled else "off"
    snapshot["you"] = {"tenant": tenant.name, "role": tenant.role.value}
    return json_response(snapshot)


@router.get(
    "/api/v1/cache/stats",
    tags=_OPERATIONS_TAGS,
    summary="Response cache: hits, misses, semantic hits, hit rate, entries, bytes",
)
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


@router.delete(
    "/api/v1/cache",
    tags=_OPERATIONS_TAGS,
    summary="Purge cached responses, optionally of one tenant or model (admin)",
)
async def cache_purge(request: Request) -> Response:
    tenant_of(request).require_admin("purging the cache")
    caching = gateway_of(request).caching
    tenant = request.query_params.get("tenant") or None
    model = request.query_params.get("model") or None
    removed = await caching.cache.purge(tenant=tenant, model=model) if caching is not None else 0
    return json_response({"removed": removed, "tenant": tenant, "model": model})


# ---------------------------------------------------------------- figures and the status page


@router.get("/metrics", tags=_OPERATIONS_TAGS, summary="Prometheus metrics (text format; admin when auth is on)")
async def metrics(request: Request) -> Response:
    _operator(request, "reading the metrics")
    await gateway_of(request).loaded.refresh()
    return Response(telemetry_of(request).metrics.exposition(), media_type=CONTENT_TYPE)


@router.get("/api/v1/metrics", tags=_OPERATIONS_TAGS, summary="The essential figures as JSON (admin when auth is on)")
async def metrics_json(request: Request) -> Response:
    _operator(request, "reading the metrics")
    await gateway_of(request).loaded.refresh()
    return json_response(telemetry_of(request).summary())


@router.get(
    "/api/v1/performance/stats",
    tags=_OPERATIONS_TAGS,
    summary="Per model p50/p95/p99 latency, time to first token, tokens/s",
)
async def performance(request: Request) -> Response:
    tenant_of(request)
    return json_response(telemetry_of(request).perf.snapshot())


@router.get(
    "/api/v1/analytics",
    tags=_OPERATIONS_TAGS,
    summary="Usage per tenant and model over a window (a user sees its own rows)",
)
async def analytics(
    request: Request, window: str = "24h", tenant: str | None = None, group_by: str | None = None
) -> Response:
    caller = tenant_of(request)
    gateway = gateway_of(request)
    if gateway.tenants.auth_enabled and not caller.is_admin:
        if tenant not in (None, caller.name):
            raise Forbidden(f"tenant '{caller.name}' can read only its own analytics")
        tenant = caller.name
    store = telemetry_of(request).analytics
    result = await store.query(window=window, tenant=tenant, group_by=group_by)
    result["recent_errors"] = await store.recent_errors(limit=20, tenant=tenant)
    return json_response(result)


@router.get("/dashboard", tags=_OPERATIONS_TAGS, include_in_schema=False)
async def dashboard() -> Response:
    page = resources.files("shared_ollama.api").joinpath("static/dashboard.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})
