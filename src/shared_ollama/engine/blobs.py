"""Blobs on the engine: Ollama's ``HEAD`` / ``POST /api/blobs/sha256:<hex>``, and the store's orphan blobs.

- ``HEAD``: 200 when the store has the blob, 404 when it does not (400 for something that is not a digest).
- ``POST``: the body is streamed to a partial file in the blobs directory, hashed as it arrives, and moved into
  place only when its sha256 is the one named (201); a blob already there is 200 without reading the body. A
  body over ``max_blob_bytes`` is a 413 (before reading anything when its Content-Length says so), a different
  digest a 400, a body that would not leave ``min_free_disk_bytes`` free (as its Content-Length says) or that fills
  the disk a 507, and a client that goes away a 499: in each case nothing is kept.
- Orphans: blob files no manifest uses (what ``shared-ollama models prune`` lists and removes).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from shared_ollama.engine.handlers import ApiError, EngineApp
from shared_ollama.engine.store import ModelStore
from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.blobs import parse_digest
from shared_ollama.web import ClientDisconnected

_WRITE_BLOCK = 1 << 20
"""Bytes gathered before one write (and hash update) in a worker thread."""
_BLOB_FILE = re.compile(r"^(sha256-[0-9a-f]{64})(-\d+-of-\d+\.gguf)?$")
"""A blob, or a link naming it as a split GGUF's part (``store.model_path``)."""


class BlobTooLarge(Exception):
    """The body is larger than the engine accepts (``max_blob_bytes``)."""


class DigestMismatch(Exception):
    """The body's sha256 is not the digest it was sent for."""


@dataclass
class _Partial:
    """A blob being written: its temporary file, running hash and size."""

    handle: BinaryIO
    path: Path
    hasher: Any
    size: int = 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.hasher.update(data)


async def receive_blob(store: ModelStore, digest: str, chunks: AsyncIterator[bytes], limit: int) -> Path:
    """Write ``chunks`` as blob ``digest`` (checked against the bytes); returns the blob's path.

    Raises BlobTooLarge past ``limit`` bytes and DigestMismatch for other bytes; a partial file is never left
    behind, whatever ends the upload (a client that goes away included).
    """
    store.blobs.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=store.blobs, prefix=".partial-upload-")
    partial = _Partial(os.fdopen(handle, "wb"), Path(name), hashlib.sha256())
    pending: list[bytes] = []
    waiting = 0
    try:
        async for chunk in chunks:
            partial.size += len(chunk)
            if partial.size > limit:
                raise BlobTooLarge(f"the blob is larger than the limit of {limit} bytes (max_blob_bytes)")
            pending.append(chunk)
            waiting += len(chunk)
            if waiting >= _WRITE_BLOCK:
                await asyncio.to_thread(partial.write, b"".join(pending))
                pending, waiting = [], 0
        if pending:
            await asyncio.to_thread(partial.write, b"".join(pending))
        await asyncio.to_thread(partial.handle.close)
        actual = "sha256:" + partial.hasher.hexdigest()
        if actual != digest:
            raise DigestMismatch(f"digest mismatch, expected {digest!r}, got {actual!r}")
        target = store.blob_path(digest)
        os.replace(partial.path, target)
        return target
    finally:
        partial.handle.close()
        partial.path.unlink(missing_ok=True)


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise ClientDisconnected from None


def _digest(request: Request) -> str:
    try:
        return parse_digest(str(request.path_params.get("digest", "")))
    except InvalidRequest as exc:
        raise ApiError(400, exc.message) from None


async def blob(engine: EngineApp, request: Request) -> Response:
    """``HEAD`` and ``POST /api/blobs/{digest}``."""
    digest = _digest(request)
    path = engine.store.blob_path(digest)
    if request.method == "HEAD":
        return Response(status_code=200 if path.is_file() else 404)
    if path.is_file():
        return Response(status_code=200)
    limit = engine.settings.max_blob_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the blob is {int(declared)} bytes; the limit is {limit} bytes (max_blob_bytes)")
    keep_free = engine.settings.min_free_disk_bytes
    engine.store.blobs.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(engine.store.blobs).free
    if declared.isdigit() and free - int(declared) < keep_free:
        raise ApiError(507, _no_room(int(declared), free, keep_free))
    try:
        await receive_blob(engine.store, digest, _body(request), limit)
    except BlobTooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except DigestMismatch as exc:
        raise ApiError(400, str(exc)) from None
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise ApiError(507, "the store's disk filled up during the upload; nothing was kept") from None
    return Response(status_code=201)


def _no_room(size: int, free: int, keep_free: int) -> str:
    return (
        f"not enough disk space for this blob: it is {size} bytes, the store's disk has {free} free and {keep_free} "
        "must stay free (min_free_disk_bytes); nothing was written"
    )


def orphan_blobs(store: ModelStore) -> list[Path]:
    """Blob files (``sha256-<hex>``) no manifest names, and the split-part links naming them, sorted by name;
    partial files and other files are left alone.

    A manifest that cannot be read raises OSError: nothing is an orphan until every manifest has been read.
    """
    if not store.blobs.is_dir():
        return []
    used = {store.blob_path(d).name for d in store.used_digests()}
    found = []
    for path in store.blobs.iterdir():
        match = _BLOB_FILE.match(path.name)
        if match is not None and match.group(1) not in used:
            found.append(path)
    return sorted(found)
