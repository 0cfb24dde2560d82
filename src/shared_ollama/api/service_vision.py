"""The service API's vision and batches under ``/api/v1``: vlm, vlm/openai, batch/chat, batch/vlm.

Vision requests take a larger body limit and per-request image compression settings; ``/api/v1/vlm/openai``
is OpenAI's chat completion handler (``openai.py``), so it answers (and errs) in OpenAI's format. A batch runs
its items at batch priority, each with its own accounting record, and answers with one result per item.
"""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from shared_ollama.api.deps import context_of, gateway_of
from shared_ollama.api.http import json_response, ndjson_response, parse, read_json, start_stream, validate
from shared_ollama.api.openai import run_chat_completion
from shared_ollama.api.openapi import LeanRoute
from shared_ollama.api.openapi import body as schema
from shared_ollama.errors import InvalidRequest, SharedOllamaError
from shared_ollama.protocol.native import BatchRequest, ChatRequest, ImageCompression, VisionRequest
from shared_ollama.protocol.openai import ChatCompletionRequest
from shared_ollama.service.admission.context import RequestContext
from shared_ollama.service.admission.scheduler import Priority
from shared_ollama.service.batch import Prepared, run_batch
from shared_ollama.service.images.vision import Compression
from shared_ollama.service.observability.records import RequestRecord
from shared_ollama.web import until_disconnect

router = APIRouter(prefix="/api/v1", tags=["vision and batch"], route_class=LeanRoute)


def _compression(options: ImageCompression | None) -> Compression | None:
    if options is None:
        return None
    return Compression(enabled=options.enabled, max_side=options.max_side, jpeg_quality=options.jpeg_quality)


def _vision_limit(request: Request) -> int:
    return gateway_of(request).settings.max_vision_body_bytes


def _vision_body(request: Request, req: VisionRequest) -> dict[str, object]:
    try:
        body = req.to_engine()
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="images") from exc
    return gateway_of(request).resolve_model(body, default=gateway_of(request).settings.default_vision_model)


@router.post(
    "/vlm",
    summary="Vision chat (native format; top-level images attach to the last user message)",
    openapi_extra=schema(VisionRequest),
)
async def vlm(request: Request) -> Response:
    req = await parse(request, VisionRequest, limit=_vision_limit(request))
    gateway = gateway_of(request)
    ctx = context_of(request)
    body = _vision_body(request, req)
    compression = _compression(req.image_compression)
    if req.stream is True:
        stack, lines = await start_stream(request, gateway.stream(ctx, "/api/chat", body, compression=compression))
        return ndjson_response(request, stack, lines)
    body["stream"] = False
    raw = await until_disconnect(request, gateway.call(ctx, "/api/chat", body, compression=compression))
    out = orjson.loads(raw)
    out["image_compression"] = [r.as_dict() for r in ctx.images]
    return json_response(out)


@router.post(
    "/vlm/openai",
    summary="Vision chat (OpenAI format: image_url content parts)",
    openapi_extra=schema(ChatCompletionRequest),
)
async def vlm_openai(request: Request) -> Response:
    data = await read_json(request, limit=_vision_limit(request))
    options = data.pop("image_compression", None)
    compression = _compression(validate(ImageCompression, options)) if options is not None else None
    return await run_chat_completion(request, validate(ChatCompletionRequest, data), compression)


def _prepare(request: Request, item: object, model: type[BaseModel], vision: bool) -> Prepared:
    gateway = gateway_of(request)
    try:
        if not isinstance(item, dict):
            raise InvalidRequest("each batch item must be a JSON object")
        req = validate(model, item)
        if vision:
            assert isinstance(req, VisionRequest)
            return Prepared(
                {**_vision_body(request, req), "stream": False}, compression=_compression(req.image_compression)
            )
        assert isinstance(req, ChatRequest)
        body = gateway.resolve_model(req.to_engine(), default=gateway.settings.default_model)
        return Prepared({**body, "stream": False})
    except SharedOllamaError as exc:
        return Prepared(None, exc)


async def _batch(request: Request, model: type[BaseModel], vision: bool) -> Response:
    limit = _vision_limit(request) if vision else None
    batch = validate(BatchRequest, await read_json(request, limit=limit))
    gateway = gateway_of(request)
    limit = gateway.settings.batch_max_items
    if len(batch.requests) > limit:
        raise InvalidRequest(
            f"a batch holds at most {limit} requests; this one has {len(batch.requests)}", param="requests"
        )
    ctx = context_of(request, priority=Priority.BATCH)
    items = [_prepare(request, item, model, vision) for item in batch.requests]
    kind = "vision" if vision else "text"
    concurrency = min(batch.concurrency or gateway.settings.batch_concurrency, ctx.tenant.limits.cap(kind))
    telemetry = request.app.state.telemetry
    route = f"{request.url.path}:item"

    async def run(index: int, item: Prepared) -> dict[str, object]:
        assert item.body is not None
        record = RequestRecord(time.time(), f"{ctx.request_id}.{index}", ctx.surface, route, tenant=ctx.tenant.name)
        item_ctx = RequestContext(
            request_id=record.request_id,
            surface=ctx.surface,  # the batch's own (``surfaces.surface_of`` of its path)
            tenant=ctx.tenant,
            priority=Priority.BATCH,
            record=record,
        )
        try:
            raw = await gateway.call(item_ctx, "/api/chat", dict(item.body), compression=item.compression)
            record.status = 200
        except SharedOllamaError as exc:
            record.status, record.code = exc.status, exc.code
            raise
        finally:
            record.latency = time.perf_counter() - item_ctx.started
            telemetry.record(record)
        out: dict[str, object] = orjson.loads(raw)
        if item_ctx.images:
            out["image_compression"] = [r.as_dict() for r in item_ctx.images]
        return out

    deadline = ctx.tenant.limits.queue_timeout(kind)
    result = await until_disconnect(request, run_batch(items, run, concurrency=concurrency, deadline=deadline))
    result["kind"] = kind
    return json_response(result)


@router.post(
    "/batch/chat",
    summary="Many chat requests in one call (batch priority, one result per item)",
    openapi_extra=schema(BatchRequest),
)
async def batch_chat(request: Request) -> Response:
    return await _batch(request, ChatRequest, vision=False)


@router.post(
    "/batch/vlm",
    summary="Many vision requests in one call (batch priority, one result per item)",
    openapi_extra=schema(BatchRequest),
)
async def batch_vlm(request: Request) -> Response:
    return await _batch(request, VisionRequest, vision=True)
