"""Model management on the service API (``/api/v1/models/...``) and the hardware profile in force.

Reads (ps, show, the profile) need only an authenticated caller; mutations (create, copy, delete, pull, load,
unload) are admin-only with auth on. Ollama's own model endpoints are in ``ollama.py``; both use
``model_common``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response

from shared_ollama.api.deps import gateway_of, tenant_of
from shared_ollama.api.http import json_response, read_json
from shared_ollama.api.model_common import allowed, model_ops, pull_model, required_name, target_host
from shared_ollama.api.openapi import LeanRoute
from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.modelfile import is_file_reference, parse_modelfile

router = APIRouter(tags=["models"], route_class=LeanRoute)
# Matching is a scan in order and ``{name:path}`` spans slashes: a fixed path goes before any path-param route
# of the same method that would also match it.


@router.get("/api/v1/models/ps", summary="Models loaded in the engine")
async def ps(request: Request) -> Response:
    ops = model_ops(request)
    target_host(request, manage=False)
    return json_response(await ops.ps())


@router.get("/api/v1/models/{name:path}/show", summary="One model's details")
async def show(request: Request, name: str) -> Response:
    model = gateway_of(request).policy.resolve_alias(name)
    allowed(request, model)
    target_host(request, manage=False)
    return json_response(await model_ops(request).show(model))


@router.post("/api/v1/models/create", summary="Create a model from Modelfile text (FROM/ADAPTER files: admin)")
async def create(request: Request) -> Response:
    ops = model_ops(request, "creating a model")
    data = await read_json(request)
    name = required_name(data, "name", "model")
    allowed(request, name)
    target_host(request, data)
    modelfile = data.get("modelfile")
    if not isinstance(modelfile, str) or not modelfile.strip():
        raise InvalidRequest("'modelfile' (the Modelfile's text) is required", param="modelfile")
    parsed = parse_modelfile(modelfile)
    if not is_file_reference(parsed.from_):
        allowed(request, parsed.from_)
    files_dir = None
    if parsed.adapters or is_file_reference(parsed.from_):  # files on the gateway's machine: admins only
        tenant_of(request).require_admin("creating a model from files on the gateway's machine (FROM/ADAPTER paths)")
        files_dir = gateway_of(request).settings.modelfile_dir or Path.cwd()
    result = await ops.create_from_modelfile(name, modelfile, files_dir)
    return json_response({"model": name, **result})


@router.post("/api/v1/models/{name:path}/copy", summary="Copy a model under a new name (admin)")
async def copy(request: Request, name: str) -> Response:
    ops = model_ops(request, "copying a model")
    data = await read_json(request)
    destination = required_name(data, "destination")
    allowed(request, name, destination)
    target_host(request, data)
    await ops.copy(name, destination)
    return json_response({"status": "success", "source": name, "destination": destination})


@router.delete("/api/v1/models/{name:path}", summary="Delete a model (admin)")
async def delete(request: Request, name: str) -> Response:
    ops = model_ops(request, "deleting a model")
    allowed(request, name)
    target_host(request)
    await ops.delete(name)
    return json_response({"status": "success", "model": name})


@router.post("/api/v1/models/pull", summary="Pull a model; progress streamed as NDJSON (admin)")
async def pull(request: Request) -> Response:
    return await pull_model(request)


@router.post("/api/v1/models/{name:path}/load", summary="Load a model now and keep it loaded (admin)")
async def load(request: Request, name: str) -> Response:
    ops = model_ops(request, "loading a model", admin=True)
    target_host(request, manage=False)
    answer = await ops.load(gateway_of(request).policy.resolve_alias(name))
    return json_response({"model": name, "status": "loaded", "engine": answer})


@router.post("/api/v1/models/{name:path}/unload", summary="Unload a model now (admin)")
async def unload(request: Request, name: str) -> Response:
    ops = model_ops(request, "unloading a model", admin=True)
    target_host(request, manage=False)
    answer = await ops.unload(gateway_of(request).policy.resolve_alias(name))
    return json_response({"model": name, "status": "unloaded", "engine": answer})


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
    limits = gateway.policy.limits
    body["limits_in_force"] = {
        "max_loaded_models": limits.max_loaded_models,
        "engine_max_loaded_models": settings.engine_max_loaded_models,
        "engine_num_parallel": settings.engine_num_parallel,
        "engine_slots": limits.slots,
        "idle_unload_seconds": limits.idle_unload_seconds,
        "source": limits.source,
        "memory_high_percent": settings.memory_high_percent,
        "memory_check_interval_seconds": settings.memory_check_interval,
        "preload_models": settings.preload_models,
    }
    body["memory_manager"] = gateway.memory.snapshot()
    return json_response(body)
