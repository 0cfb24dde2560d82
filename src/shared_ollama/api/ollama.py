"""Ollama's API, drop-in: everything under ``/api/`` that Ollama defines, and its ``/`` liveness answer.

The official ``ollama`` clients work against the gateway unchanged: generation (chat, generate, embed,
embeddings) goes through the pipeline; tags, ps, show and version are read from the engine; create, copy,
delete and pull manage models (admin-only with auth on; listed under "models" in the API docs).
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from shared_ollama.api.deps import authorized, context_of, gateway_of, tenant_of
from shared_ollama.api.http import json_response, ndjson_response, parse, read_json, start_stream
from shared_ollama.api.model_common import (
    allowed,
    listed_models,
    model_ops,
    pull_model,
    required_name,
    target_host,
)
from shared_ollama.api.openapi import LeanRoute, body
from shared_ollama.errors import FeatureNotImplemented
from shared_ollama.protocol.native import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    LegacyEmbeddingsRequest,
    ShowRequest,
)
from shared_ollama.web import until_disconnect

router = APIRouter(route_class=LeanRoute)
# The API docs' groups: Ollama's own endpoints, and its model management (listed with the service API's).
_OLLAMA_TAGS = ["ollama"]
_MODEL_TAGS = ["models"]


async def _generation(request: Request, path: str, body: dict[str, object], stream: bool) -> Response:
    gateway = gateway_of(request)
    ctx = context_of(request)
    gateway.resolve_model(body)
    if stream:
        stack, lines = await start_stream(request, gateway.stream(ctx, path, body))
        return ndjson_response(request, stack, lines)
    return json_response(await until_disconnect(request, gateway.call(ctx, path, body)))


# ---------------------------------------------------------------- generation


@router.post(
    "/api/chat",
    tags=_OLLAMA_TAGS,
    summary="Chat (Ollama format; streams NDJSON unless stream is false)",
    openapi_extra=body(ChatRequest),
)
async def chat(request: Request) -> Response:
    req = await parse(request, ChatRequest)
    return await _generation(request, "/api/chat", req.to_engine(), req.stream is not False)


@router.post(
    "/api/generate",
    tags=_OLLAMA_TAGS,
    summary="Generate (Ollama format; streams NDJSON unless stream is false)",
    openapi_extra=body(GenerateRequest),
)
async def generate(request: Request) -> Response:
    req = await parse(request, GenerateRequest)
    return await _generation(request, "/api/generate", req.to_engine(), req.stream is not False)


@router.post(
    "/api/embed", tags=_OLLAMA_TAGS, summary="Embeddings for one or more inputs", openapi_extra=body(EmbedRequest)
)
async def embed(request: Request) -> Response:
    req = await parse(request, EmbedRequest)
    return await _generation(request, "/api/embed", req.to_engine(), False)


@router.post(
    "/api/embeddings",
    tags=_OLLAMA_TAGS,
    summary="Legacy single-prompt embeddings",
    openapi_extra=body(LegacyEmbeddingsRequest),
)
async def embeddings(request: Request) -> Response:
    req = await parse(request, LegacyEmbeddingsRequest)
    return await _generation(request, "/api/embeddings", req.to_engine(), False)


# ---------------------------------------------------------------- reads from the engine


@router.post("/api/show", tags=_OLLAMA_TAGS, summary="Model details", openapi_extra=body(ShowRequest))
async def show(request: Request) -> Response:
    req = await parse(request, ShowRequest)
    body = req.to_engine()
    body["model"] = req.target()
    allowed(request, body["model"])
    target_host(request, manage=False)
    return json_response(await authorized(request).inspect("/api/show", body))


@router.get("/api/tags", tags=_OLLAMA_TAGS, summary="Installed models")
async def tags(request: Request) -> Response:
    return json_response(await listed_models(request))


@router.get("/api/ps", tags=_OLLAMA_TAGS, summary="Loaded models")
async def ps(request: Request) -> Response:
    gateway = authorized(request)
    target_host(request, manage=False)
    return json_response(await gateway.get("/api/ps"))


@router.get("/api/version", tags=_OLLAMA_TAGS, summary="Engine version")
async def version(request: Request) -> Response:
    return json_response(await gateway_of(request).get("/api/version"))


@router.get("/", tags=_OLLAMA_TAGS, include_in_schema=False)
@router.head("/", tags=_OLLAMA_TAGS, include_in_schema=False)
async def root() -> Response:
    return PlainTextResponse("Ollama is running")


# ---------------------------------------------------------------- model management (admin)


@router.post("/api/create", tags=_MODEL_TAGS, summary="Create a model (Ollama's structured body; admin)")
async def ollama_create(request: Request) -> Response:
    ops = model_ops(request, "creating a model")
    data = await read_json(request)
    data["model"] = required_name(data, "model", "name")
    allowed(request, data["model"], data.get("from"))
    target_host(request, data)
    result = await ops.create(data)
    if data.get("stream") is False:
        return json_response(result)
    return Response(orjson.dumps(result) + b"\n", media_type="application/x-ndjson")


@router.post("/api/copy", tags=_MODEL_TAGS, summary="Copy a model (admin)")
async def ollama_copy(request: Request) -> Response:
    ops = model_ops(request, "copying a model")
    data = await read_json(request)
    source, destination = required_name(data, "source"), required_name(data, "destination")
    allowed(request, source, destination)
    target_host(request, data)
    await ops.copy(source, destination)
    return Response(status_code=200)


@router.delete("/api/delete", tags=_MODEL_TAGS, summary="Delete a model (admin)")
async def ollama_delete(request: Request) -> Response:
    ops = model_ops(request, "deleting a model")
    data = await read_json(request)
    name = required_name(data, "model", "name")
    allowed(request, name)
    target_host(request, data)
    await ops.delete(name)
    return Response(status_code=200)


@router.post("/api/pull", tags=_MODEL_TAGS, summary="Pull a model (streams progress unless stream is false; admin)")
async def ollama_pull(request: Request) -> Response:
    return await pull_model(request)


@router.post("/api/push", tags=_MODEL_TAGS, summary="Push a model: not offered (501 not_implemented)")
async def ollama_push(request: Request) -> Response:
    tenant_of(request)  # who is asking is checked first, as on every route
    raise FeatureNotImplemented(
        "pushing models is not offered: this service never publishes models to a registry; "
        "push from an Ollama of your own"
    )
