"""Observability: Prometheus metrics, the JSON summary, performance per model, analytics, the status page."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from shared_ollama.api.deps import gateway_of, tenant_of
from shared_ollama.api.http import json_response
from shared_ollama.api.openapi import LeanRoute
from shared_ollama.errors import Forbidden
from shared_ollama.service.metrics import CONTENT_TYPE
from shared_ollama.service.telemetry import Telemetry

router = APIRouter(tags=["operations"], route_class=LeanRoute)


def telemetry_of(request: Request) -> Telemetry:
    telemetry: Telemetry = request.app.state.telemetry
    return telemetry


def _operator(request: Request, what: str) -> None:
    """Figures about every tenant: an admin's when auth is on (anyone's when it is off)."""
    tenant_of(request).require_admin(what)


@router.get("/metrics", summary="Prometheus metrics (text format; admin when auth is on)")
async def metrics(request: Request) -> Response:
    _operator(request, "reading the metrics")
    await gateway_of(request).refresh_loaded()
    return Response(telemetry_of(request).metrics.exposition(), media_type=CONTENT_TYPE)


@router.get("/api/v1/metrics", summary="The essential figures as JSON (admin when auth is on)")
async def metrics_json(request: Request) -> Response:
    _operator(request, "reading the metrics")
    await gateway_of(request).refresh_loaded()
    return json_response(telemetry_of(request).summary())


@router.get("/api/v1/performance/stats", summary="Per model p50/p95/p99 latency, time to first token, tokens/s")
async def performance(request: Request) -> Response:
    tenant_of(request)
    return json_response(telemetry_of(request).perf.snapshot())


@router.get("/api/v1/analytics", summary="Usage per tenant and model over a window (a user sees its own rows)")
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


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> Response:
    page = resources.files("shared_ollama.api").joinpath("static/dashboard.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})
