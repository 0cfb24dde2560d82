"""OpenAI's API, drop-in: everything under ``/v1`` (chat completions, completions, embeddings, models).

Requests are translated onto the native pipeline and answers back; the ``openai`` SDK works unchanged. The
chat completion handler also serves the service API's ``/api/v1/chat/completions`` and, with image settings,
``/api/v1/vlm/openai`` (``service_generation.py``, ``service_vision.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from shared_ollama.api.agents_openai import agent_chat_completion, is_agent
from shared_ollama.api.deps import context_of, gateway_of, name_user
from shared_ollama.api.http import json_response, native_chunk, parse, sse_response, sse_stream, start_stream
from shared_ollama.api.model_common import listed_models
from shared_ollama.api.openapi import LeanRoute, body
from shared_ollama.errors import ModelNotFound
from shared_ollama.protocol import convert
from shared_ollama.protocol.names import canonical_model
from shared_ollama.protocol.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from shared_ollama.protocol.openai_stream import ChatChunkFrames
from shared_ollama.protocol.tool_choice import ForcedCallStream, call_from_answer
from shared_ollama.protocol.upstream_openai_pass import PassThrough
from shared_ollama.service.images.vision import Compression
from shared_ollama.web import until_disconnect

JsonDict = dict[str, Any]

router = APIRouter(tags=["openai"], route_class=LeanRoute)


async def chat_completions(request: Request) -> Response:
    """Shared by ``/v1/chat/completions`` and the service API's ``/api/v1/chat/completions``."""
    return await run_chat_completion(request, await parse(request, ChatCompletionRequest))


async def run_chat_completion(
    request: Request, req: ChatCompletionRequest, compression: Compression | None = None
) -> Response:
    """One chat completion through the pipeline (``compression``: the request's own image settings); a model
    named ``agent:<name>`` runs that agent (``agents_openai.py``)."""
    if is_agent(req.model):
        return await agent_chat_completion(request, req)
    gateway = gateway_of(request)
    ctx = context_of(request)
    name_user(ctx, req.user or req.safety_identifier, "user" if req.user else "safety_identifier")
    body = convert.chat_request_to_native(req)
    forced = convert.forced_tool_call(req)  # tool_choice required or named: the answer's JSON is the call
    created = int(time.time())
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    passthrough = None
    if forced is None and gateway.fleet is not None:  # an openai host's own answer goes to the client as it is
        passthrough = PassThrough(model=req.model, include_usage=include_usage)
        ctx = replace(ctx, passthrough=passthrough)
    if req.stream:
        frames = ChatChunkFrames(request_id=ctx.request_id, created=created, include_usage=include_usage)
        held = ForcedCallStream(forced) if forced is not None else None

        def to_frames(line: bytes) -> bytes:
            if passthrough is not None and passthrough.used:
                return passthrough.frames()
            native = native_chunk(line)
            if held is not None:  # a forced tool call: the whole answer, once, as the call
                native = held.feed(native)
                if native is None:
                    return b""
            return frames(native)

        opened = gateway.stream(ctx, "/api/chat", body, compression=compression)
        stack, lines = await start_stream(request, opened)
        return sse_stream(request, stack, lines, to_frames)
    raw = await until_disconnect(request, gateway.call(ctx, "/api/chat", body, compression=compression))
    if passthrough is not None and passthrough.used:
        return json_response(passthrough.body())
    native = orjson.loads(raw)
    if forced is not None:
        native = call_from_answer(native, forced)
    return json_response(convert.chat_response_from_native(native, request_id=ctx.request_id, created=created))


router.add_api_route(
    "/v1/chat/completions",
    chat_completions,
    methods=["POST"],
    summary="Chat completions (OpenAI format)",
    openapi_extra=body(ChatCompletionRequest),
)


@router.post("/v1/completions", summary="Text completions (OpenAI format)", openapi_extra=body(CompletionRequest))
async def completions(request: Request) -> Response:
    req = await parse(request, CompletionRequest)
    gateway = gateway_of(request)
    ctx = context_of(request)
    name_user(ctx, req.user or req.safety_identifier, "user" if req.user else "safety_identifier")
    body = convert.completion_request_to_native(req)
    created = int(time.time())
    echo = str(body["prompt"]) if req.echo else ""
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        to_chunks = partial(
            convert.completion_chunk_from_native,
            request_id=ctx.request_id,
            created=created,
            include_usage=include_usage,
        )
        stack, lines = await start_stream(request, gateway.stream(ctx, "/api/generate", body))
        return sse_response(request, stack, lines, _echoed(to_chunks, echo) if echo else to_chunks)
    raw = await until_disconnect(request, gateway.call(ctx, "/api/generate", body))
    native = orjson.loads(raw)
    answer = convert.completion_response_from_native(native, request_id=ctx.request_id, created=created, echo=echo)
    return json_response(answer)


def _echoed(to_chunks: Callable[[JsonDict], list[JsonDict]], prompt: str) -> Callable[[JsonDict], list[JsonDict]]:
    """``to_chunks`` with the prompt put before the first chunk's text (``echo: true``)."""
    pending = [prompt]

    def convert_with_echo(native: JsonDict) -> list[JsonDict]:
        chunks = to_chunks(native)
        if pending and chunks and chunks[0]["choices"]:
            chunks[0]["choices"][0]["text"] = pending.pop() + chunks[0]["choices"][0]["text"]
        return chunks

    return convert_with_echo


@router.post(
    "/v1/embeddings", summary="Embeddings (OpenAI format, float or base64)", openapi_extra=body(EmbeddingRequest)
)
async def embeddings(request: Request) -> Response:
    req = await parse(request, EmbeddingRequest)
    gateway = gateway_of(request)
    ctx = context_of(request)
    name_user(ctx, req.user, "user")
    raw = await until_disconnect(request, gateway.call(ctx, "/api/embed", convert.embedding_request_to_native(req)))
    return json_response(convert.embedding_response_from_native(orjson.loads(raw), encoding=req.encoding_format))


@router.get("/v1/models", summary="Models (OpenAI format)")
async def models(request: Request) -> Response:
    tags = await listed_models(request)
    return json_response(convert.models_from_tags(tags))


@router.get("/v1/models/{model:path}", summary="One model (OpenAI format)")
async def model(request: Request, model: str) -> Response:
    tags = await listed_models(request)
    for tag in tags.get("models", []):
        names = {tag.get("name"), tag.get("model")}
        if model in names or canonical_model(model) in names:
            return json_response(convert.model_from_tag(tag))
    raise ModelNotFound(f"model '{model}' not found", param="model")
