"""One set of handlers that renders the error hierarchy per surface (DESIGN.md §2).

A request gets OpenAI's error body iff ``surfaces.surface_of`` puts its path on the ``openai`` surface, Anthropic's
(``{"type": "error", "error": {"type", "message"}}``, a full queue as 529) on the ``anthropic`` surface; every
other surface gets the native flat body."""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from shared_ollama.api.middleware import CLIENT_CLOSED, REQUEST_ID_HEADER, new_request_id
from shared_ollama.api.surfaces import ANTHROPIC, OPENAI, surface_of
from shared_ollama.errors import (
    RETRY_STATUSES,
    InternalError,
    InvalidRequest,
    NotFound,
    SharedOllamaError,
)
from shared_ollama.protocol.anthropic_stream import error_status_and_body as anthropic_error_status_and_body
from shared_ollama.service.admission.gate import is_rejection
from shared_ollama.web import CLIENT_CLOSED_STATUS, ClientDisconnected

log = logging.getLogger(__name__)


def request_id_of(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if not rid:
        rid = new_request_id()
        request.state.request_id = rid
    return str(rid)


def native_error_body(exc: SharedOllamaError, request_id: str) -> dict[str, Any]:
    return {"error": exc.message, "code": exc.code, "retry_after": exc.retry_after, "request_id": request_id}


def openai_error_body(exc: SharedOllamaError, request_id: str) -> dict[str, Any]:
    return {
        "error": {
            "message": exc.message,
            "type": exc.openai_type,
            "code": exc.code,
            "param": exc.param,
            "retry_after": exc.retry_after,
            "request_id": request_id,
        }
    }


def anthropic_error(exc: SharedOllamaError, request_id: str) -> tuple[int, dict[str, Any]]:
    """Anthropic's status and error body (``protocol/anthropic.py`` maps codes to its error types)."""
    return anthropic_error_status_and_body(exc, request_id)


def note_error(request: Request, exc: SharedOllamaError) -> None:
    """Put the error's code on the request's accounting record."""
    record = getattr(request.state, "record", None)
    if record is not None:
        record.code = exc.code


def retry_after_header(seconds: float | None) -> str:
    """``Retry-After`` in whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds or 0)))


def error_response(request: Request, exc: SharedOllamaError) -> Response:
    note_error(request, exc)
    request_id = request_id_of(request)
    surface = surface_of(request.scope["path"])
    status = exc.status
    if surface == ANTHROPIC:
        status, body = anthropic_error(exc, request_id)
    else:
        body = openai_error_body(exc, request_id) if surface == OPENAI else native_error_body(exc, request_id)
    headers = {REQUEST_ID_HEADER: request_id}
    if exc.status in RETRY_STATUSES:  # every 429 and 503 says when to come back
        headers["Retry-After"] = retry_after_header(exc.retry_after)
    elif exc.status == 408:  # the rest of a late body is not waited for: the connection closes
        headers["Connection"] = "close"
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _validation_message(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "invalid request: " + "; ".join(parts)


def _count_rejection(request: Request, exc: SharedOllamaError) -> None:
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is not None and is_rejection(exc):
        gateway.admission.record_rejection(exc.code)


def install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SharedOllamaError)
        _count_rejection(request, exc)
        if exc.status >= 500:
            log.warning("request %s failed: %s %s", request_id_of(request), exc.code, exc.message)
        return error_response(request, exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        error = InvalidRequest(_validation_message(list(exc.errors())))
        _count_rejection(request, error)
        return error_response(request, error)

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        """The client went away (while sending its body or waiting for its answer): nobody reads this."""
        record = getattr(request.state, "record", None)
        if record is not None:
            record.code = CLIENT_CLOSED
        return Response(status_code=CLIENT_CLOSED_STATUS)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(request, NotFound(f"no such endpoint: {request.method} {request.url.path}"))
        if exc.status_code == 405:
            return error_response(request, InvalidRequest(f"method {request.method} not allowed here"))
        return error_response(request, InvalidRequest(str(exc.detail)))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error in request %s", request_id_of(request))
        return error_response(request, InternalError("internal error; see the service log for this request id"))

    app.add_exception_handler(SharedOllamaError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ClientDisconnected, on_disconnect)
    app.add_exception_handler(ClientDisconnect, on_disconnect)  # Starlette's, from reading a body
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
