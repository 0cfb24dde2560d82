"""Request reading and response writing shared by the adapters: JSON in, NDJSON/SSE out, disconnects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse

from shared_ollama.api.deps import gateway_of, tenant_of
from shared_ollama.api.errors import (
    native_error_body,
    note_error,
    openai_error_body,
    request_id_of,
)
from shared_ollama.errors import (
    BackendError,
    InternalError,
    InvalidRequest,
    RequestBodyTimeout,
    RequestTooLarge,
    SharedOllamaError,
)
from shared_ollama.protocol.openai_stream import sse_event
from shared_ollama.service.admission.deadline import StreamDeadline
from shared_ollama.web import ClientDisconnected, mark_answered, parse_json_object, until_disconnect

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
JsonDict = dict[str, Any]

JSON = "application/json"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes, and with
    ``408 body_timeout`` when it has not all arrived within ``seconds``.

    A declared Content-Length over the limit is refused before reading anything; a chunked body is read
    only up to the limit. A client that goes away mid-body raises ``ClientDisconnected`` (a 499, not an error).
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body is {int(declared)} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    deadline = StreamDeadline(seconds)  # one timer, cheaper than asyncio.timeout on every request
    try:
        while True:
            chunk = await deadline.next(stream)
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except StopAsyncIteration:
        return b"".join(chunks)
    except TimeoutError:
        raise RequestBodyTimeout(f"the request body did not arrive within {seconds:g} s") from None
    except ClientDisconnect:
        raise ClientDisconnected from None
    finally:
        deadline.close()


async def read_json(request: Request, *, limit: int | None = None) -> JsonDict:
    """The authenticated caller's JSON object body (auth is checked before a byte of the body is read)."""
    gateway = gateway_of(request)
    tenant_of(request)
    settings = gateway.settings
    body = await read_body(request, limit or settings.max_body_bytes, settings.body_timeout)
    return parse_json_object(body)


def validate(model: type[M], data: JsonDict) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        parts = []
        errors = exc.errors()
        for err in errors[:5]:
            loc = ".".join(str(p) for p in err["loc"])
            parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
        first = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        raise InvalidRequest("invalid request: " + "; ".join(parts), param=first or None) from exc
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


async def parse(request: Request, model: type[M], *, limit: int | None = None) -> M:
    return validate(model, await read_json(request, limit=limit))


def json_response(body: bytes | JsonDict, status: int = 200) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, status_code=status, media_type=JSON)


def _frame_error(exc: BaseException) -> SharedOllamaError:
    return exc if isinstance(exc, SharedOllamaError) else InternalError("the stream failed unexpectedly")


async def open_stream(
    source: AbstractAsyncContextManager[AsyncIterator[bytes]],
) -> tuple[AsyncExitStack, AsyncIterator[bytes]]:
    """Enter a stream context now, so errors before the first byte become ordinary HTTP errors."""
    stack = AsyncExitStack()
    try:
        lines = await stack.enter_async_context(source)
    except BaseException:
        await stack.aclose()
        raise
    return stack, lines


async def start_stream(
    request: Request, source: AbstractAsyncContextManager[AsyncIterator[bytes]]
) -> tuple[AsyncExitStack, AsyncIterator[bytes]]:
    """Open a stream (admission and queueing included), abandoning it if the client leaves meanwhile."""
    return await until_disconnect(request, open_stream(source))


def ndjson_response(request: Request, stack: AsyncExitStack, lines: AsyncIterator[bytes]) -> StreamingResponse:
    """Forward NDJSON lines untouched; a failure after the first byte ends with one error line."""
    request_id = request_id_of(request)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for line in lines:
                if line.startswith(b'{"error"'):
                    raise BackendError(str(orjson.loads(line).get("error", "engine error")))
                yield line
                if b'"done":true' in line or b'"status":"success"' in line:  # an answer's or a pull's last line
                    mark_answered(request)
        except Exception as exc:
            error = _frame_error(exc)
            note_error(request, error)
            yield orjson.dumps(native_error_body(error, request_id)) + b"\n"
            mark_answered(request)  # the error frame is the stream's answer
        finally:
            await stack.aclose()

    return StreamingResponse(body(), media_type=NDJSON)


def native_chunk(line: bytes) -> Any:
    """A native stream line, parsed; an engine's error line raises ``BackendError``."""
    native = orjson.loads(line)
    if isinstance(native, dict) and "error" in native:
        raise BackendError(str(native["error"]))
    return native


def sse_frames(convert: Callable[[JsonDict], list[JsonDict]]) -> Callable[[bytes], bytes]:
    """One native NDJSON line -> its SSE events, framed and joined (``b""`` when it makes none), so a line is
    one write to the client however many events it makes. A native error line raises ``BackendError``."""

    def frames(line: bytes) -> bytes:
        return b"".join([sse_event(event) for event in convert(native_chunk(line))])

    return frames


def sse_response(
    request: Request,
    stack: AsyncExitStack,
    lines: AsyncIterator[bytes],
    convert: Callable[[JsonDict], list[JsonDict]],
) -> StreamingResponse:
    """Translate native NDJSON lines into OpenAI SSE events, ending with ``data: [DONE]``."""
    return sse_stream(request, stack, lines, sse_frames(convert))


def sse_stream(
    request: Request, stack: AsyncExitStack, lines: AsyncIterator[bytes], frames: Callable[[bytes], bytes]
) -> StreamingResponse:
    """Native NDJSON lines as SSE, each line's events framed by ``frames``, ending with ``data: [DONE]``; a
    failure after the first byte ends the stream with one error event (and no ``[DONE]``)."""
    request_id = request_id_of(request)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for line in lines:
                frame = frames(line)
                if frame:
                    yield frame
            yield b"data: [DONE]\n\n"
            mark_answered(request)
        except Exception as exc:
            error = _frame_error(exc)
            note_error(request, error)
            yield b"data: " + orjson.dumps(openai_error_body(error, request_id)) + b"\n\n"
            mark_answered(request)
        finally:
            await stack.aclose()

    return StreamingResponse(body(), media_type=SSE, headers={"Cache-Control": "no-cache"})
