"""Model management helpers shared by Ollama's drop-in (``ollama.py``) and the service API (``service_models.py``):
the caller's model operations (admin-only for mutations), a required name from a body, and a pull."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from shared_ollama.api.deps import gateway_of, tenant_of
from shared_ollama.api.http import json_response, ndjson_response, read_json, start_stream
from shared_ollama.errors import BackendError, InvalidRequest, ModelNotFound, SharedOllamaError
from shared_ollama.service.models.ops import ModelOps
from shared_ollama.web import until_disconnect

JsonDict = dict[str, Any]


def model_ops(request: Request, action: str | None = None) -> ModelOps:
    """The engine's model operations for an authenticated caller; an admin one when ``action`` is given."""
    tenant = tenant_of(request)
    if action is not None:
        tenant.require_admin(action)
    ops: ModelOps = gateway_of(request).models
    return ops


def required_name(data: dict[str, object], *keys: str) -> str:
    """The first non-blank string among ``keys`` in a request body (a 400 naming the first key otherwise)."""
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise InvalidRequest(f"'{keys[0]}' is required", param=keys[0])


async def pull_model(request: Request) -> Response:
    """Pull the body's ``name`` (or ``model``): progress as NDJSON, or only the last line when stream is false."""
    ops = model_ops(request, "pulling a model")
    data = await read_json(request)
    name = required_name(data, "name", "model")
    stack, lines = await start_stream(request, ops.pull(name, insecure=bool(data.get("insecure"))))
    if data.get("stream") is False:
        return json_response(await until_disconnect(request, _last_line(stack, lines)))
    return ndjson_response(request, stack, lines)


async def _last_line(stack: AsyncExitStack, lines: AsyncIterator[bytes]) -> JsonDict:
    """A non-streamed pull's answer: its last progress line, or the engine's error as an error of ours (a failed
    pull is never a 200). Cancelled (engine connection closed, pull abandoned) when its client leaves."""
    last: JsonDict = {}
    try:
        async for line in lines:
            try:
                parsed = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise BackendError("the engine sent a pull progress line that is not JSON") from None
            if isinstance(parsed, dict) and "error" in parsed:
                raise _pull_error(str(parsed["error"]))
            last = parsed if isinstance(parsed, dict) else last
    finally:
        await stack.aclose()
    return last


def _pull_error(message: str) -> SharedOllamaError:
    if "not found" in message or "does not exist" in message:
        return ModelNotFound(message, param="model")
    return BackendError(message)
