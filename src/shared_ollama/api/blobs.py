"""Ollama's blob endpoints, drop-in: ``HEAD`` and ``POST /api/blobs/sha256:<hex>`` (what ``ollama create`` and
Open WebUI send before a create with ``files`` or ``adapters``).

Both are model management (admins, or tenants whose policy has ``manage_models``). An upload is streamed to the
engine as it arrives, never held whole: refused with 413 when its Content-Length or its bytes pass
``max_blob_bytes``, with ``408 body_timeout`` when no bytes arrive for ``body_timeout`` seconds, and a client that
goes away mid-upload is a 499; the engine checks the digest (400 on a mismatch) and keeps nothing of a failed upload.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from shared_ollama.api.deps import gateway_of
from shared_ollama.api.model_common import model_ops, target_host
from shared_ollama.api.openapi import LeanRoute
from shared_ollama.errors import RequestBodyTimeout, RequestTooLarge
from shared_ollama.protocol.blobs import parse_digest
from shared_ollama.web import ClientDisconnected

router = APIRouter(tags=["models"], route_class=LeanRoute)
_ACTION = "uploading a blob"


async def _limited(request: Request, limit: int, idle: float) -> AsyncIterator[bytes]:
    """The request's body as it arrives, at most ``limit`` bytes, each chunk within ``idle`` seconds."""
    size = 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestBodyTimeout(f"no part of the blob arrived for {idle:g} s") from None
        except ClientDisconnect:
            raise ClientDisconnected from None
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"the blob exceeds the limit of {limit} bytes (max_blob_bytes)")
        if chunk:
            yield chunk


@router.head("/api/blobs/{digest}", summary="Whether the engine has a blob (200 or 404; model management)")
async def blob_exists(request: Request, digest: str) -> Response:
    ops = model_ops(request, _ACTION)
    target_host(request)
    return Response(status_code=200 if await ops.blob_exists(parse_digest(digest)) else 404)


@router.post("/api/blobs/{digest}", summary="Upload a blob, streamed to the engine (201 created; admin)")
async def upload_blob(request: Request, digest: str) -> Response:
    ops = model_ops(request, _ACTION)
    target_host(request)
    checked = parse_digest(digest)
    settings = gateway_of(request).settings
    limit = settings.max_blob_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"the blob is {int(declared)} bytes; the limit is {limit} bytes (max_blob_bytes)")
    length = int(declared) if declared.isdigit() else None
    status = await ops.upload_blob(checked, _limited(request, limit, settings.body_timeout), length)
    return Response(status_code=status)
