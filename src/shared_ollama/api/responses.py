"""OpenAI's Responses API, drop-in: ``POST /v1/responses`` (also the service API's ``/api/v1/responses``, in
OpenAI's error format), and the stored responses: ``GET``/``DELETE /v1/responses/{id}``,
``GET /v1/responses/{id}/input_items``.

A request becomes one native chat through the pipeline (``Gateway.call`` / ``Gateway.stream`` on ``/api/chat``:
admission, fairness, deadlines, cache, accounting, request ids); the answer becomes the response object or its
SSE events (``protocol/responses_stream.py``). With ``store`` (the default) the response is kept for its tenant
(``service/responses``); ``previous_response_id`` continues that conversation. ``truncation: auto`` drops the
oldest turns of a conversation whose prompt is over the limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from shared_ollama.api.deps import context_of, gateway_of, name_user, tenant_of
from shared_ollama.api.errors import note_error, request_id_of
from shared_ollama.api.http import SSE, json_response, parse, start_stream
from shared_ollama.api.openapi import LeanRoute, body
from shared_ollama.errors import (
    BackendError,
    InternalError,
    InvalidRequest,
    NotFound,
    PromptTooLarge,
    SharedOllamaError,
)
from shared_ollama.protocol.responses import ResponsesRequest, new_id
from shared_ollama.protocol.responses_convert import Prepared, drop_oldest, request_to_native, turns
from shared_ollama.protocol.responses_stream import ResponseEvents, output_to_native, response_shape
from shared_ollama.service.admission.context import RequestContext
from shared_ollama.service.admission.prompts import check_prompt_size
from shared_ollama.service.gateway import Gateway
from shared_ollama.service.images.vision import Compression
from shared_ollama.service.responses.store import ResponseStore, StoredResponse
from shared_ollama.web import mark_answered, until_disconnect

log = logging.getLogger(__name__)

T = TypeVar("T")
JsonDict = dict[str, Any]

router = APIRouter(tags=["openai"], route_class=LeanRoute)

LOW_DETAIL_SIDE = 512
"""Longest image side for ``detail: low`` (OpenAI's low-detail images are 512 px)."""
MAX_ITEMS_PAGE = 100


def store_of(request: Request) -> ResponseStore:
    store: ResponseStore = request.app.state.responses
    return store


def _compression(detail: str | None) -> Compression | None:
    """The image settings the images' ``detail`` asks: ``low`` 512 px, ``original`` untouched, else the default."""
    if detail == "low":
        return Compression(max_side=LOW_DETAIL_SIDE)
    if detail == "original":
        return Compression(enabled=False)
    return None


async def create_response(request: Request) -> Response:
    """Shared by ``/v1/responses`` and the service API's ``/api/v1/responses``."""
    req = await parse(request, ResponsesRequest)
    gateway = gateway_of(request)
    ctx = context_of(request)
    if req.end_user:
        name_user(ctx, req.end_user, "safety_identifier" if req.safety_identifier else "user")
    store = store_of(request)
    history: list[JsonDict] = []
    if req.previous_response_id:
        previous = await store.get(ctx.tenant.name, req.previous_response_id)
        if previous is None:
            raise NotFound(
                f"Previous response with id '{req.previous_response_id}' not found.", param="previous_response_id"
            )
        history = previous.conversation
    prepared = request_to_native(req, history)
    gateway.resolve_model(prepared.fields)
    compression = _compression(prepared.detail)
    shape = response_shape(
        req, response_id=new_id("resp"), created_at=int(time.time()), model=str(prepared.fields["model"])
    )
    machine = ResponseEvents(shape, forced=prepared.forced, parallel=req.parallel_tool_calls is not False)

    async def keep(sent: JsonDict) -> None:
        """Store the response (as it stands) with the conversation it continues: what was sent, and its output."""
        if not req.stored:
            return
        conversation = sent["messages"][len(prepared.preamble) :] + output_to_native(machine.response["output"])
        try:
            await store.put(ctx.tenant.name, StoredResponse(machine.response, prepared.items, conversation))
        except Exception:
            log.exception("response %s could not be stored", machine.response["id"])

    if req.stream:

        async def open_events(sent: JsonDict) -> tuple[AsyncExitStack, AsyncIterator[bytes]]:
            return await start_stream(request, gateway.stream(ctx, "/api/chat", sent, compression=compression))

        (stack, lines), sent = await _within_limit(gateway, ctx, req, prepared, open_events)
        events = _events(request, stack, lines, machine, lambda: keep(sent))
        return StreamingResponse(events, media_type=SSE, headers={"Cache-Control": "no-cache"})

    async def call(sent: JsonDict) -> bytes:
        return await until_disconnect(request, gateway.call(ctx, "/api/chat", sent, compression=compression))

    raw, sent = await _within_limit(gateway, ctx, req, prepared, call)
    machine.feed({**orjson.loads(raw), "done": True})
    await keep(sent)
    return json_response(machine.response)


router.add_api_route(
    "/v1/responses",
    create_response,
    methods=["POST"],
    summary="Create a model response (OpenAI Responses format)",
    openapi_extra=body(ResponsesRequest),
)
router.add_api_route(
    "/api/v1/responses",
    create_response,
    methods=["POST"],
    summary="Create a model response (OpenAI Responses format)",
    tags=["service"],
    openapi_extra=body(ResponsesRequest),
)


# ---------------------------------------------------------------- truncation


async def _within_limit(
    gateway: Gateway,
    ctx: RequestContext,
    req: ResponsesRequest,
    prepared: Prepared,
    run: Callable[[JsonDict], Awaitable[T]],
) -> tuple[T, JsonDict]:
    """``run`` on the native body, and the body it ran on. With ``truncation: auto``, a conversation over the
    prompt limit loses its oldest turns first: as few as the tenant's limit needs (a binary search with the
    pipeline's own prompt check), then more, doubling, while the pipeline still refuses it (a stricter policy)."""
    if req.truncation != "auto":
        sent = prepared.body()
        return await run(sent), sent
    conversation = prepared.conversation
    last = len(turns(conversation)) - 1
    drop = await _fewest_dropped(gateway, ctx, prepared, last)
    while True:
        sent = prepared.body(drop_oldest(conversation, drop))
        try:
            return await run(sent), sent
        except PromptTooLarge:
            if drop >= last:
                raise
            drop = min(last, max(1, drop * 2))


async def _fewest_dropped(gateway: Gateway, ctx: RequestContext, prepared: Prepared, last: int) -> int:
    """The fewest oldest turns to drop for the prompt to fit the tenant's limit (``last`` when none will do)."""
    limit = ctx.tenant.limits.max_prompt_tokens
    budget = gateway.settings.prompt_count_timeout

    async def fits(drop: int) -> bool:
        try:
            await check_prompt_size(
                gateway.client, prepared.body(drop_oldest(prepared.conversation, drop)), limit, count_budget=budget
            )
        except PromptTooLarge:
            return False
        return True

    if await fits(0):
        return 0
    if last < 1 or not await fits(last):
        return last
    low, high = 1, last
    while low < high:  # the smallest drop that fits: dropping more never makes a prompt longer
        middle = (low + high) // 2
        if await fits(middle):
            high = middle
        else:
            low = middle + 1
    return low


# ---------------------------------------------------------------- the stream


def _failure(error: SharedOllamaError, request_id: str) -> JsonDict:
    """The ``error`` of a failed response: OpenAI's code for it (the SDK knows a fixed set), the service's own
    code beside it (``service_code``), when to retry and the request id."""
    if error.status == 429:
        code = "rate_limit_exceeded"
    elif error.code == "invalid_image":
        code = "invalid_image"
    elif error.status < 500:
        code = "invalid_prompt"
    else:
        code = "server_error"
    return {
        "code": code,
        "message": error.message,
        "param": error.param,
        "type": error.openai_type,
        "service_code": error.code,
        "retry_after": error.retry_after,
        "request_id": request_id,
    }


def _frame(event: JsonDict) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _events(
    request: Request,
    stack: AsyncExitStack,
    lines: AsyncIterator[bytes],
    machine: ResponseEvents,
    keep: Callable[[], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """The SSE events of one response; a failure after the first byte ends it with one ``response.failed``. The
    response is stored before its last event goes out (a client that reads it may ask for it at once)."""
    request_id = request_id_of(request)

    async def events() -> AsyncIterator[bytes]:
        try:
            for event in machine.start():
                yield _frame(event)
            async for line in lines:
                native = orjson.loads(line)
                if not isinstance(native, dict) or "error" in native:
                    raise BackendError(str(native.get("error") if isinstance(native, dict) else "engine error"))
                produced = machine.feed(native)
                if machine.finished:
                    await keep()
                for event in produced:
                    yield _frame(event)
                if machine.finished:
                    mark_answered(request)
            if not machine.finished:
                raise BackendError("the engine's stream ended before its final chunk")
        except Exception as exc:
            error = exc if isinstance(exc, SharedOllamaError) else InternalError("the stream failed unexpectedly")
            note_error(request, error)
            failed = machine.fail(_failure(error, request_id))
            if failed:
                await keep()
            for event in failed:
                yield _frame(event)
            mark_answered(request)
        finally:
            await stack.aclose()

    return events()


# ---------------------------------------------------------------- stored responses


def _no_query(request: Request, allowed: frozenset[str] = frozenset()) -> None:
    for name in request.query_params:
        if name not in allowed:
            raise InvalidRequest(f"query parameter '{name}' is not supported by this service", param=name)


async def _stored(request: Request, response_id: str) -> StoredResponse:
    stored = await store_of(request).get(tenant_of(request).name, response_id)
    if stored is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return stored


@router.get("/v1/responses/{response_id}", summary="A stored response (OpenAI Responses format)")
@router.get("/api/v1/responses/{response_id}", summary="A stored response (OpenAI Responses format)", tags=["service"])
async def get_response(request: Request, response_id: str) -> Response:
    _no_query(request)
    return json_response((await _stored(request, response_id)).response)


@router.delete("/v1/responses/{response_id}", summary="Delete a stored response")
@router.delete("/api/v1/responses/{response_id}", summary="Delete a stored response", tags=["service"])
async def delete_response(request: Request, response_id: str) -> Response:
    _no_query(request)
    if not await store_of(request).delete(tenant_of(request).name, response_id):
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return json_response({"id": response_id, "object": "response", "deleted": True})


@router.get("/v1/responses/{response_id}/input_items", summary="A stored response's input items, paged")
@router.get("/api/v1/responses/{response_id}/input_items", summary="A stored response's input items", tags=["service"])
async def input_items(request: Request, response_id: str) -> Response:
    _no_query(request, frozenset({"limit", "order", "after"}))
    params = request.query_params
    raw_limit = params.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_ITEMS_PAGE:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_ITEMS_PAGE}", param="limit")
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'", param="order")
    items = list((await _stored(request, response_id)).input_items)
    if order == "desc":
        items.reverse()
    start = 0
    after = params.get("after")
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise InvalidRequest(f"no input item '{after}' in response '{response_id}'", param="after")
        start = ids.index(after) + 1
    page = items[start : start + int(raw_limit)]
    return json_response(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + len(page) < len(items),
        }
    )
