"""The service API's generation under ``/api/v1``: chat, generate, embeddings, the model list, and chat completions.

Native shapes, non-streamed unless asked; a default model when the request names none; a per-request cache
mode. ``/api/v1/chat/completions`` is OpenAI's handler (``openai.py``), so it answers (and errs) in OpenAI's
format. Vision and batches are in ``service_vision.py``, model management in ``service_models.py``, health in
``operations.py``.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from shared_ollama.api.deps import context_of, gateway_of, tenant_of
from shared_ollama.api.http import json_response, ndjson_response, parse, read_json, start_stream, validate
from shared_ollama.api.model_common import listed_models
from shared_ollama.api.openai import chat_completions
from shared_ollama.api.openapi import LeanRoute, body
from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.native import ChatRequest, GenerateRequest, ServiceEmbeddingsRequest
from shared_ollama.protocol.openai import ChatCompletionRequest
from shared_ollama.protocol.poml import PomlChatRequest, apply_rendered, take_poml
from shared_ollama.service.poml.renderer import PomlRenderer
from shared_ollama.web import until_disconnect

router = APIRouter(prefix="/api/v1", tags=["service"], route_class=LeanRoute)


async def _native(request: Request, path: str, body: dict[str, object], stream: bool) -> Response:
    gateway = gateway_of(request)
    ctx = context_of(request)
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
    "/chat",
    summary="Chat (native format; non-streamed unless stream is true); `poml` and `context` instead of `messages` "
    "render a POML template (docs/POML_GUIDE.md)",
    openapi_extra=body(PomlChatRequest),
)
async def chat(request: Request) -> Response:
    data = await read_json(request)
    template = take_poml(data, max_bytes=gateway_of(request).settings.poml_max_template_bytes)
    if template is not None:
        renderer: PomlRenderer = request.app.state.poml
        rendering = renderer.render(template.markup, template.context, tenant=tenant_of(request).name)
        apply_rendered(data, await until_disconnect(request, rendering))
    req = validate(ChatRequest, data)
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
    ctx = context_of(request)
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
    return json_response(await listed_models(request))
