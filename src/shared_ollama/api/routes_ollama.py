"""Ollama drop-in: the official ``ollama`` clients work against the gateway unchanged."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from shared_ollama.api.deps import authorized, context_of, gateway_of
from shared_ollama.api.http import (
    json_response,
    ndjson_response,
    parse,
    start_stream,
    until_disconnect,
)
from shared_ollama.api.openapi import LeanRoute, body
from shared_ollama.protocol.native import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    LegacyEmbeddingsRequest,
    ShowRequest,
)

router = APIRouter(tags=["ollama"], route_class=LeanRoute)
SURFACE = "ollama"


async def _generation(request: Request, path: str, body: dict[str, object], stream: bool) -> Response:
    gateway = gateway_of(request)
    ctx = context_of(request, SURFACE)
    gateway.resolve_model(body)
    if stream:
        stack, lines = await start_stream(request, gateway.stream(ctx, path, body))
        return ndjson_response(request, stack, lines)
    return json_response(await until_disconnect(request, gateway.call(ctx, path, body)))


@router.post(
    "/api/chat", summary="Chat (Ollama format; streams NDJSON unless stream is false)", openapi_extra=body(ChatRequest)
)
async def chat(request: Request) -> Response:
    req = await parse(request, ChatRequest)
    return await _generation(request, "/api/chat", req.to_engine(), req.stream is not False)


@router.post(
    "/api/generate",
    summary="Generate (Ollama format; streams NDJSON unless stream is false)",
    openapi_extra=body(GenerateRequest),
)
async def generate(request: Request) -> Response:
    req = await parse(request, GenerateRequest)
    return await _generation(request, "/api/generate", req.to_engine(), req.stream is not False)


@router.post("/api/embed", summary="Embeddings for one or more inputs", openapi_extra=body(EmbedRequest))
async def embed(request: Request) -> Response:
    req = await parse(request, EmbedRequest)
    return await _generation(request, "/api/embed", req.to_engine(), False)


@router.post("/api/embeddings", summary="Legacy single-prompt embeddings", openapi_extra=body(LegacyEmbeddingsRequest))
async def embeddings(request: Request) -> Response:
    req = await parse(request, LegacyEmbeddingsRequest)
    return await _generation(request, "/api/embeddings", req.to_engine(), False)


@router.post("/api/show", summary="Model details", openapi_extra=body(ShowRequest))
async def show(request: Request) -> Response:
    req = await parse(request, ShowRequest)
    body = req.to_engine()
    body["model"] = req.target()
    return json_response(await authorized(request).inspect("/api/show", body))


@router.get("/api/tags", summary="Installed models")
async def tags(request: Request) -> Response:
    return json_response(await authorized(request).get("/api/tags"))


@router.get("/api/ps", summary="Loaded models")
async def ps(request: Request) -> Response:
    return json_response(await authorized(request).get("/api/ps"))


@router.get("/api/version", summary="Engine version")
async def version(request: Request) -> Response:
    return json_response(await gateway_of(request).get("/api/version"))


@router.get("/", include_in_schema=False)
@router.head("/", include_in_schema=False)
async def root() -> Response:
    return PlainTextResponse("Ollama is running")
