"""Model management on the service API and Ollama's drop-in endpoints (mutations are admin-only with auth on)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from shared_ollama.api.deps import gateway_of, tenant_of
from shared_ollama.api.http import json_response, ndjson_response, read_json, start_stream
from shared_ollama.api.openapi import LeanRoute
from shared_ollama.errors import InvalidRequest
from shared_ollama.service.models import ModelOps

router = APIRouter(tags=["models"], route_class=LeanRoute)


def _ops(request: Request, action: str | None = None) -> ModelOps:
    tenant = tenant_of(request)
    if action is not None:
        tenant.require_admin(action)
    ops: ModelOps = gateway_of(request).models
    return ops


def _name(data: dict[str, object], *keys: str) -> str:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise InvalidRequest(f"'{keys[0]}' is required", param=keys[0])


# ---------------------------------------------------------------- service API


@router.get("/api/v1/models/ps", summary="Models loaded in the engine")
async def ps(request: Request) -> Response:
    return json_response(await _ops(request).ps())


@router.get("/api/v1/models/{name:path}/show", summary="One model's details")
async def show(request: Request, name: str) -> Response:
    return json_response(await _ops(request).show(gateway_of(request).resolve_alias(name)))


@router.post("/api/v1/models/create", summary="Create a model from Modelfile text (admin)")
async def create(request: Request) -> Response:
    ops = _ops(request, "creating a model")
    data = await read_json(request)
    name = _name(data, "name", "model")
    modelfile = data.get("modelfile")
    if not isinstance(modelfile, str) or not modelfile.strip():
        raise InvalidRequest("'modelfile' (the Modelfile's text) is required", param="modelfile")
    result = await ops.create_from_modelfile(name, modelfile)
    return json_response({"model": name, **result})


@router.post("/api/v1/models/{name:path}/copy", summary="Copy a model under a new name (admin)")
async def copy(request: Request, name: str) -> Response:
    ops = _ops(request, "copying a model")
    destination = _name(await read_json(request), "destination")
    await ops.copy(name, destination)
    return json_response({"status": "success", "source": name, "destination": destination})


@router.delete("/api/v1/models/{name:path}", summary="Delete a model (admin)")
async def delete(request: Request, name: str) -> Response:
    await _ops(request, "deleting a model").delete(name)
    return json_response({"status": "success", "model": name})


@router.post("/api/v1/models/pull", summary="Pull a model; progress streamed as NDJSON (admin)")
async def pull(request: Request) -> Response:
    ops = _ops(request, "pulling a model")
    data = await read_json(request)
    name = _name(data, "name", "model")
    stack, lines = await start_stream(request, ops.pull(name, insecure=bool(data.get("insecure"))))
    if data.get("stream") is False:
        last = b"{}"
        try:
            async for line in lines:
                last = line
        finally:
            await stack.aclose()
        return json_response(orjson.loads(last))
    return ndjson_response(request, stack, lines)


@router.post("/api/v1/models/{name:path}/load", summary="Load a model now and keep it loaded (admin)")
async def load(request: Request, name: str) -> Response:
    ops = _ops(request, "loading a model")
    answer = await ops.load(gateway_of(request).resolve_alias(name))
    return json_response({"model": name, "status": "loaded", "engine": answer})


@router.post("/api/v1/models/{name:path}/unload", summary="Unload a model now (admin)")
async def unload(request: Request, name: str) -> Response:
    ops = _ops(request, "unloading a model")
    answer = await ops.unload(gateway_of(request).resolve_alias(name))
    return json_response({"model": name, "status": "unloaded", "engine": answer})


# ---------------------------------------------------------------- Ollama drop-in


@router.post("/api/create", summary="Create a model (Ollama's structured body; admin)")
async def ollama_create(request: Request) -> Response:
    ops = _ops(request, "creating a model")
    data = await read_json(request)
    data["model"] = _name(data, "model", "name")
    result = await ops.create(data)
    if data.get("stream") is False:
        return json_response(result)
    return Response(orjson.dumps(result) + b"\n", media_type="application/x-ndjson")


@router.post("/api/copy", summary="Copy a model (admin)")
async def ollama_copy(request: Request) -> Response:
    ops = _ops(request, "copying a model")
    data = await read_json(request)
    await ops.copy(_name(data, "source"), _name(data, "destination"))
    return Response(status_code=200)


@router.delete("/api/delete", summary="Delete a model (admin)")
async def ollama_delete(request: Request) -> Response:
    ops = _ops(request, "deleting a model")
    await ops.delete(_name(await read_json(request), "model", "name"))
    return Response(status_code=200)


@router.post("/api/pull", summary="Pull a model (streams progress unless stream is false; admin)")
async def ollama_pull(request: Request) -> Response:
    return await pull(request)


@router.get("/api/v1/system/model-profile", summary="The hardware profile in force, why, and the limits")
async def model_profile(request: Request) -> Response:
    tenant_of(request)
    gateway = gateway_of(request)
    settings = gateway.settings
    body: dict[str, object] = (
        gateway.profile.as_dict()
        if gateway.profile is not None
        else {"profile": None, "reason": "no models config (config/models.yaml or SHARED_OLLAMA_MODELS_CONFIG)"}
    )
    body["limits_in_force"] = {
        "engine_max_loaded_models": settings.engine_max_loaded_models,
        "engine_num_parallel": settings.engine_num_parallel,
        "engine_slots": settings.slots,
        "idle_unload_seconds": settings.idle_unload_seconds,
        "memory_high_percent": settings.memory_high_percent,
        "memory_check_interval_seconds": settings.memory_check_interval,
        "preload_models": settings.preload_models,
    }
    body["memory_manager"] = gateway.memory.snapshot() if gateway.memory is not None else None
    return json_response(body)
