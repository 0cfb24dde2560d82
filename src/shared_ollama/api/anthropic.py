"""Anthropic's Messages API, drop-in: ``/v1/messages`` and ``/v1/messages/count_tokens``.

A request becomes a native chat request (``protocol/anthropic.py``) and goes through the one pipeline
(``Gateway.call`` / ``Gateway.stream`` on ``/api/chat``); the answer comes back as Anthropic's message or SSE event
stream (``protocol/anthropic_stream.py``); the ``anthropic`` SDK works unchanged. Errors are Anthropic's
(``api/errors.py``); a stream that fails after its first byte ends with one ``error`` event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from shared_ollama.api.deps import context_of, gateway_of, name_user
from shared_ollama.api.errors import anthropic_error, note_error, request_id_of
from shared_ollama.api.http import SSE, json_response, open_stream, parse, start_stream
from shared_ollama.api.openapi import LeanRoute, body
from shared_ollama.errors import BackendError, InternalError, SharedOllamaError
from shared_ollama.protocol import anthropic
from shared_ollama.protocol.anthropic import CountTokensRequest, MessagesRequest, Plan
from shared_ollama.protocol.anthropic_stream import Event, MessageEvents, accumulate, sse
from shared_ollama.service.admission.context import RequestContext
from shared_ollama.service.admission.prompts import BYTES_PER_TOKEN_ESTIMATE
from shared_ollama.service.gateway import Gateway
from shared_ollama.web import mark_answered, until_disconnect

router = APIRouter(tags=["anthropic"], route_class=LeanRoute)


REQUEST_ID_HEADER = "request-id"
"""Anthropic's response header naming the request (the SDK's ``_request_id``): the gateway's request id."""


async def _prompt_tokens(gateway: Gateway, ctx: RequestContext, native: dict[str, object], *, load: bool = True) -> int:
    """The prompt in tokens with the engine's tokenizer, or the conservative estimate without one."""
    counted = await gateway.count_tokens(ctx, {"model": native["model"], **anthropic.tokenize_body(native)}, load=load)
    return counted if counted is not None else anthropic.estimate_tokens(native, BYTES_PER_TOKEN_ESTIMATE)


async def _cut_prompt_tokens(gateway: Gateway, ctx: RequestContext, native: dict[str, object]) -> int:
    """The prompt of an answer cut at a stop sequence: counted by the model just used (it is loaded), within the
    prompt-count budget and without a slot; the estimate if that cannot be."""
    try:
        async with asyncio.timeout(gateway.settings.prompt_count_timeout):
            return await _prompt_tokens(gateway, ctx, native, load=False)
    except (SharedOllamaError, TimeoutError):
        return anthropic.estimate_tokens(native, BYTES_PER_TOKEN_ESTIMATE)


def _name_request(request: Request) -> None:
    """Every answer to the request, errors included, carries Anthropic's ``request-id`` header."""
    headers = getattr(request.state, "response_headers", None)
    if headers is not None:
        headers[REQUEST_ID_HEADER] = request_id_of(request)


async def _events(
    gateway: Gateway, ctx: RequestContext, plan: Plan, stack: AsyncExitStack, lines: AsyncIterator[bytes]
) -> AsyncGenerator[Event, None]:
    """The answer's events from the engine's lines; at a stop sequence the engine is hung up on (it stops
    generating) and the message ends with the prompt counted by the tokenizer."""
    converter = MessageEvents(plan, f"msg_{ctx.request_id}")
    prompt = 0
    try:
        async for line in lines:
            native = orjson.loads(line)
            if isinstance(native, dict) and "error" in native:
                raise BackendError(str(native["error"]))
            for event in converter.feed(native):
                yield event
            if converter.cut is not None:
                break  # (after the final chunk the lines run out: a stream read to its end can be cached)
        if converter.cut is not None:
            # Counted before the stream is closed: closing it settles the request's token quota with the record.
            prompt = await _cut_prompt_tokens(gateway, ctx, plan.body)
            ctx.record.prompt_tokens = prompt
            ctx.record.completion_tokens = converter.output_tokens
    finally:
        await stack.aclose()
    if converter.cut is not None:
        for event in converter.finish(prompt):
            yield event
    elif not converter.done:
        raise BackendError("the engine's stream ended before its final chunk")


def _sse_response(request: Request, stack: AsyncExitStack, events: AsyncGenerator[Event, None]) -> StreamingResponse:
    request_id = request_id_of(request)

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield sse(event)
                if event[0] == "message_stop":
                    mark_answered(request)
        except Exception as exc:
            error = exc if isinstance(exc, SharedOllamaError) else InternalError("the stream failed unexpectedly")
            note_error(request, error)
            yield sse(("error", anthropic_error(error, request_id)[1]))
            mark_answered(request)
        finally:
            await events.aclose()
            await stack.aclose()

    return StreamingResponse(stream(), media_type=SSE, headers={"Cache-Control": "no-cache"})


async def _collect(gateway: Gateway, ctx: RequestContext, plan: Plan) -> list[Event]:
    stack, lines = await open_stream(gateway.stream(ctx, "/api/chat", plan.body))
    return [event async for event in _events(gateway, ctx, plan, stack, lines)]


@router.post("/v1/messages", summary="Messages (Anthropic format)", openapi_extra=body(MessagesRequest))
async def messages(request: Request) -> Response:
    _name_request(request)
    req = await parse(request, MessagesRequest)
    gateway = gateway_of(request)
    ctx = context_of(request)
    if req.metadata is not None and req.metadata.user_id:
        name_user(ctx, req.metadata.user_id, "metadata.user_id")
    plan = anthropic.to_native(req)
    gateway.resolve_model(plan.body)
    if req.stream:
        stack, lines = await start_stream(request, gateway.stream(ctx, "/api/chat", plan.body))
        return _sse_response(request, stack, _events(gateway, ctx, plan, stack, lines))
    if plan.stop_sequences:  # streamed from the engine, to hang up at the stop sequence
        events = await until_disconnect(request, _collect(gateway, ctx, plan))
        ctx.record.stream = False
    else:
        raw = await until_disconnect(request, gateway.call(ctx, "/api/chat", plan.body))
        events = MessageEvents(plan, f"msg_{ctx.request_id}").feed(orjson.loads(raw))
    return json_response(accumulate(events))


@router.post(
    "/v1/messages/count_tokens",
    summary="Count a messages request's input tokens (Anthropic format)",
    openapi_extra=body(CountTokensRequest),
)
async def count_tokens(request: Request) -> Response:
    _name_request(request)
    req = await parse(request, CountTokensRequest)
    gateway = gateway_of(request)
    ctx = context_of(request)
    plan = anthropic.to_native(req)
    gateway.resolve_model(plan.body)
    tokens = await until_disconnect(request, _prompt_tokens(gateway, ctx, plan.body))
    return json_response({"input_tokens": tokens})
