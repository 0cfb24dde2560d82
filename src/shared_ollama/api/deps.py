"""How adapters reach the composition root's objects, and who is asking."""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request

from shared_ollama.api.errors import request_id_of
from shared_ollama.api.surfaces import surface_of
from shared_ollama.errors import InvalidRequest
from shared_ollama.service.admission.context import RequestContext
from shared_ollama.service.admission.gate import TENANT_HEADER
from shared_ollama.service.admission.scheduler import Priority
from shared_ollama.service.admission.tenants import Tenant
from shared_ollama.service.fleet.fleet import check_host
from shared_ollama.service.gateway import Gateway
from shared_ollama.service.observability.records import RequestRecord

PRIORITY_HEADER = "x-shared-ollama-priority"
CACHE_HEADER = "x-shared-ollama-cache"
ENGINE_HOST_HEADER = "x-shared-ollama-engine-host"
USER_HEADER = "x-shared-ollama-user"
OPENWEBUI_USER_HEADER = "x-openwebui-user-id"
MAX_USER_LENGTH = 128


def gateway_of(request: Request) -> Gateway:
    state = _state(request)  # kept with the request: adapters ask several times per request
    gateway: Gateway | None = state.get("gateway")
    if gateway is None:
        gateway = state["gateway"] = request.app.state.gateway
    return gateway


def tenant_of(request: Request) -> Tenant:
    """The authenticated tenant (401 without a valid key when auth is on); resolved once per request. From here
    on every response to the request names it (``X-Shared-Ollama-Tenant``): answers, cache hits and errors."""
    state = _state(request)
    tenant: Tenant | None = state.get("tenant")
    if tenant is None:
        tenant = gateway_of(request).tenants.authenticate(request.headers)
        state["tenant"] = tenant
        record = state.get("record")
        if record is not None:
            record.tenant = tenant.name
        headers = state.get("response_headers")
        if headers is not None:
            headers[TENANT_HEADER] = tenant.name
        host = request.headers.get(ENGINE_HOST_HEADER)
        if host:  # the engine host asked for: checked here, for every route (used by placement and model_common)
            check_host(host, gateway_of(request).fleet)
    return tenant


def _state(request: Request) -> dict[str, Any]:
    """The request's state as the dict ``request.state`` wraps (its attribute look-ups raise and catch an
    ``AttributeError`` for every name not set: this runs on every request)."""
    state: dict[str, Any] = request.scope.setdefault("state", {})
    return state


def authorized(request: Request) -> Gateway:
    """The gateway, for a request whose caller has been authenticated."""
    tenant_of(request)
    return gateway_of(request)


def context_of(request: Request, priority: Priority | None = None) -> RequestContext:
    """The pipeline's context for this request: its tenant, priority (the header's unless given) and record; the
    surface is the path's (``surfaces.surface_of``)."""
    tenant = tenant_of(request)
    surface = surface_of(request.scope["path"])
    if priority is None:
        raw = request.headers.get(PRIORITY_HEADER, Priority.INTERACTIVE.value).strip().lower()
        try:
            priority = Priority(raw)
        except ValueError:
            raise InvalidRequest("X-Shared-Ollama-Priority must be 'interactive' or 'batch'") from None
    state = _state(request)
    record = state.get("record") or RequestRecord(
        ts=time.time(), request_id=request_id_of(request), surface=surface, route=request.url.path
    )
    record.surface = surface
    record.tenant = tenant.name
    if record.user is None:
        record.user = _header_user(request, tenant)
    return RequestContext(
        request_id=request_id_of(request),
        surface=surface,
        tenant=tenant,
        priority=priority,
        headers=state.get("response_headers", {}),
        record=record,
        started=state.get("started") or time.perf_counter(),
        cache_header=request.headers.get(CACHE_HEADER),
        engine_host=request.headers.get(ENGINE_HOST_HEADER) or None,
    )


def _header_user(request: Request, tenant: Tenant) -> str | None:
    """The end user a request names in a header: ``X-Shared-Ollama-User``, else Open WebUI's user id header when
    the tenant's policy trusts it (its value is only as good as the front end that sets it)."""
    value = request.headers.get(USER_HEADER)
    if value is not None:
        return checked_user(value, "X-Shared-Ollama-User")
    if tenant.policy.openwebui_users:
        value = request.headers.get(OPENWEBUI_USER_HEADER)
        if value is not None:
            return checked_user(value, "X-OpenWebUI-User-Id")
    return None


def checked_user(value: str, field: str) -> str | None:
    """An end user's name as given (blank: none); a 400 naming ``field`` when it is too long."""
    value = value.strip()
    if len(value) > MAX_USER_LENGTH:
        raise InvalidRequest(f"{field} must be at most {MAX_USER_LENGTH} characters", param=field)
    return value or None


def name_user(ctx: RequestContext, value: str | None, field: str) -> None:
    """A request body's end user (OpenAI ``user``/``safety_identifier``, Anthropic ``metadata.user_id``), unless a
    header named one already."""
    if value is not None and ctx.record.user is None:
        ctx.record.user = checked_user(value, field)
