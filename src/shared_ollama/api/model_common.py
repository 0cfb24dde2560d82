"""Model management helpers shared by Ollama's drop-in (``ollama.py``) and the service API (``service_models.py``):
the caller's model operations (admin-only for mutations), a required name from a body, and a pull."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from shared_ollama.api.deps import ENGINE_HOST_HEADER, gateway_of, tenant_of
from shared_ollama.api.http import json_response, ndjson_response, read_json, start_stream
from shared_ollama.errors import BackendError, InsufficientStorage, InvalidRequest, ModelNotFound, SharedOllamaError
from shared_ollama.service.admission.engine_policy import check_model
from shared_ollama.service.fleet.fleet import check_host
from shared_ollama.service.fleet.routing import TARGET_HOST
from shared_ollama.service.models.ops import ModelOps
from shared_ollama.web import until_disconnect

JsonDict = dict[str, Any]
_PULL_FIELDS = frozenset({"name", "model", "stream", "insecure", "host"})
"""What a pull takes (Ollama's ``PullRequest`` less its deprecated username and password, plus ``host``)."""


def model_ops(request: Request, action: str | None = None, *, admin: bool = False) -> ModelOps:
    """The engine's model operations for an authenticated caller. With ``action``: a mutation, for admins and
    tenants whose policy lets them manage models (creating, copying, pulling, deleting); ``admin``: for admins
    only (loading and unloading, which act on every tenant's requests)."""
    tenant = tenant_of(request)
    if action is not None and admin:
        tenant.require_admin(action)
    elif action is not None:
        tenant.require_model_management(action)
    ops: ModelOps = gateway_of(request).models
    return ops


def target_host(request: Request, data: JsonDict | None = None, *, manage: bool = True) -> None:
    """The one engine host a model operation or model listing goes to, when the request names one: model
    management's ``host`` (in the body, taken out of it, or in the query string) or the
    ``X-Shared-Ollama-Engine-Host`` header (the same name if both). Set (``TARGET_HOST``) for this request's own
    engine calls only — the middleware clears it when the request ends — never for what the service does on its
    own account. A name that is not a host, or (``manage``: creating, copying, pulling, deleting,
    uploading) not an ``ollama`` host, is a 400 naming the field."""
    value = data.pop("host", None) if data is not None else None
    if value is None:
        value = request.query_params.get("host")
    header = request.headers.get(ENGINE_HOST_HEADER) or None
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise InvalidRequest("'host' must be the name of an engine host (GET /api/v1/engines)", param="host")
    name = value.strip() if isinstance(value, str) else header
    if name is None:
        return
    if header is not None and name != header:
        raise InvalidRequest(f"'host' ({name}) and X-Shared-Ollama-Engine-Host ({header}) differ", param="host")
    param = "host" if value is not None else "X-Shared-Ollama-Engine-Host"
    fleet = gateway_of(request).fleet
    check_host(name, fleet, param=param)
    if manage and fleet is not None and fleet.monitor.host(name).kind != "ollama":
        raise InvalidRequest(f"{param}: '{name}' is an openai host; models are managed on ollama hosts", param=param)
    TARGET_HOST.set(name)


async def listed_models(request: Request) -> JsonDict:
    """The engine's ``/api/tags`` as the caller may see it: only the models its policy lets it use."""
    tenant = tenant_of(request)
    target_host(request, manage=False)
    tags: JsonDict = orjson.loads(await gateway_of(request).get("/api/tags"))
    if tenant.policy.models is not None or tenant.policy.deny_models:
        models = tags.get("models") or []
        tags["models"] = [m for m in models if tenant.policy.allows(str(m.get("name") or m.get("model") or ""))]
    return tags


def allowed(request: Request, *names: object) -> None:
    """A 403 naming the first of ``names`` the caller's allow-list or deny-list keeps it from (a tenant allowed to
    manage models manages only the ones it may use). Non-strings (an absent ``from``) are skipped."""
    tenant = tenant_of(request)
    for name in names:
        if isinstance(name, str) and name:
            check_model(tenant, name)


def required_name(data: dict[str, object], *keys: str) -> str:
    """The first non-blank string among ``keys`` in a request body (a 400 naming the first key otherwise)."""
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise InvalidRequest(f"'{keys[0]}' is required", param=keys[0])


async def pull_model(request: Request) -> Response:
    """Pull the body's ``name`` (or ``model``): progress as NDJSON, or only the last line when stream is false."""
    ops = model_ops(request, "pulling a model")
    data = await read_json(request)
    name = required_name(data, "name", "model")
    allowed(request, name)
    target_host(request, data)
    unknown = sorted(set(data) - _PULL_FIELDS)
    if unknown:
        raise InvalidRequest(f"'{unknown[0]}' is not a pull field (pull takes {', '.join(sorted(_PULL_FIELDS))})",
                             param=unknown[0])  # fmt: skip
    insecure = data.get("insecure", False)
    if not isinstance(insecure, bool):
        raise InvalidRequest("'insecure' must be true or false", param="insecure")
    stack, lines = await start_stream(request, ops.pull(name, insecure=insecure))
    if data.get("stream") is False:
        return json_response(await until_disconnect(request, _last_line(stack, lines)))
    return ndjson_response(request, stack, lines)


async def _last_line(stack: AsyncExitStack, lines: AsyncIterator[bytes]) -> JsonDict:
    """A non-streamed pull's answer: its last progress line, or the engine's error as an error of ours (a failed
    pull is never a 200). Cancelled (engine connection closed, pull abandoned) when its client leaves."""
    last: JsonDict = {}
    try:
        async for line in lines:
            try:
                parsed = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise BackendError("the engine sent a pull progress line that is not JSON") from None
            if isinstance(parsed, dict) and "error" in parsed:
                raise _pull_error(str(parsed["error"]))
            last = parsed if isinstance(parsed, dict) else last
    finally:
        await stack.aclose()
    return last


def _pull_error(message: str) -> SharedOllamaError:
    """The engine's pull error line as an error of ours (the embedded engine's wording, engine/pull/)."""
    if message.startswith("not enough disk space"):
        return InsufficientStorage(message)
    if "not found" in message or "does not exist" in message:
        return ModelNotFound(message, param="model")
    if message.startswith("cannot run "):
        return InvalidRequest(message, param="model")
    return BackendError(message)
