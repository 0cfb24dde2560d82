"""The service API under ``/api/v1``: the seed's endpoints, native shapes, non-streamed by default."""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from shared_ollama import __version__
from shared_ollama.api.deps import authorized, context_of, gateway_of
from shared_ollama.api.http import (
    json_response,
    ndjson_response,
    parse,
    read_json,
    start_stream,
    until_disconnect,
    validate,
)
from shared_ollama.api.openapi import LeanRoute, body
from shared_ollama.api.routes_openai import chat_completions
from shared_ollama.backends.supervisor import EngineState
from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.native import ChatRequest, GenerateRequest, ServiceEmbeddingsRequest
from shared_ollama.protocol.openai import ChatCompletionRequest

router = APIRouter(prefix="/api/v1", tags=["service"], route_class=LeanRoute)
SURFACE = "service"


@router.get("/health", summary="Service and engine health (503 when degraded)")
async def health(request: Request) -> Response:
    gateway = gateway_of(request)
    engine = gateway.supervisor.snapshot()
    healthy = engine["state"] == EngineState.RUNNING
    loaded = await gateway.refresh_loaded() if healthy else []
    live = gateway.live_state()
    body = {
        "status": "healthy" if healthy else "degraded",
        "ollama_status": engine["state"],
        "engine": {**engine, "loaded_models": loaded, "models": gateway.loaded if healthy else []},
        "queue": {"depth": live.queue_depth, "slots_total": live.slots_total, "slots_in_use": live.slots_in_use},
        "service_version": __version__,
        "uptime_seconds": round(time.time() - request.app.state.started_at, 3),
        "default_model": gateway.settings.default_model,
    }
    if not healthy:
        body["reason"] = engine["last_error"] or f"engine is {engine['state']}"
    return json_response(body, status=200 if healthy else 503)


async def _native(request: Request, path: str, body: dict[str, object], stream: bool) -> Response:
    gateway = gateway_of(request)
    ctx = context_of(request, SURFACE)
    gateway.resolve_model(body, default=gateway.settings.default_model)
    cache = body.pop("cache", None)  # the service API's own field: the cache mode this request asks for
    if cache is not None and not isinstance(cache, str):
        raise InvalidRequest("cache must be 'off', 'exact' or 'semantic'", param="cache")
    if stream:
        stack, lines = await start_stream(request, gateway.stream(ctx, path, body, cache=cache))
        return ndjson_response(request, stack, lines)
    body["stream"] = False
    return json_response(await until_disconnect(request, gateway.call(ctx, path, body, cache=cache)))


@router.post(
    "/chat", summary="Chat (native format; non-streamed unless stream is true)", openapi_extra=body(ChatRequest)
)
async def chat(request: Request) -> Response:
    req = await parse(request, ChatRequest)
    return await _native(request, "/api/chat", req.to_engine(), req.stream is True)


@router.post(
    "/generate",
    summary="Generate (native format; non-streamed unless stream is true)",
    openapi_extra=body(GenerateRequest),
)
async def generate(request: Request) -> Response:
    req = await parse(request, GenerateRequest)
    return await _native(request, "/api/generate", req.to_engine(), req.stream is True)


router.add_api_route(
    "/chat/completions",
    chat_completions,
    methods=["POST"],
    summary="Chat completions (OpenAI format)",
    openapi_extra=body(ChatCompletionRequest),
)


@router.post(
    "/embeddings",
    summary="Embeddings: `prompt` (one text) or `input` (text or list)",
    openapi_extra=body(ServiceEmbeddingsRequest),
)
async def embeddings(request: Request) -> Response:
    req = validate(ServiceEmbeddingsRequest, await read_json(request))
    try:
        texts = req.texts()
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="input") from exc
    gateway = gateway_of(request)
    ctx = context_of(request, SURFACE)
    body = {k: v for k, v in req.to_engine().items() if k != "prompt"}
    body["input"] = texts
    gateway.resolve_model(body, default=gateway.settings.default_embedding_model)
    native = orjson.loads(await until_disconnect(request, gateway.call(ctx, "/api/embed", body)))
    vectors = native.get("embeddings") or []
    out = {
        "model": native.get("model", body["model"]),
        "embeddings": vectors,
        "prompt_eval_count": native.get("prompt_eval_count"),
        "total_duration": native.get("total_duration"),
    }
    if isinstance(texts, str) and vectors:
        out["embedding"] = vectors[0]
    return json_response(out)


@router.get("/models", summary="Installed models")
async def models(request: Request) -> Response:
    return json_response(await authorized(request).get("/api/tags"))
