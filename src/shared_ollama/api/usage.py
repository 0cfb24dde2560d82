"""``GET /api/v1/usage``: requests, tokens and engine seconds per tenant, model or end user over a window.

With auth on, a user's key reads its own tenant's usage only (asking for another tenant is a 403); an admin
reads every tenant's, or one tenant's with ``tenant=``. Not counted as traffic (see ``middleware.py``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from shared_ollama.api.deps import tenant_of
from shared_ollama.api.http import json_response
from shared_ollama.api.openapi import LeanRoute
from shared_ollama.errors import Forbidden
from shared_ollama.service.observability.telemetry import Telemetry
from shared_ollama.service.observability.usage import UsageQuery, usage

router = APIRouter(route_class=LeanRoute)


@router.get(
    "/api/v1/usage",
    tags=["operations"],
    summary="Requests, tokens and engine seconds per tenant, model or user, per hour or day (a user sees its own)",
)
async def usage_report(
    request: Request,
    window: str = "24h",
    group_by: str = "tenant",
    bucket: str | None = None,
    tenant: str | None = None,
) -> Response:
    caller = tenant_of(request)
    if not caller.is_admin:
        if tenant not in (None, caller.name):
            raise Forbidden(f"tenant '{caller.name}' can read only its own usage")
        tenant = caller.name
    query = UsageQuery.parse(window=window, group_by=group_by, bucket=bucket, tenant=tenant or None)
    telemetry: Telemetry = request.app.state.telemetry
    return json_response(await usage(telemetry.analytics, query))
