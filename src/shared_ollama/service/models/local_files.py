"""Files on the gateway's machine that a Modelfile names (``FROM ./model.gguf``, ``ADAPTER ./lora.gguf``): where
they are, their digest, and their bytes read in blocks (streamed to the engine as blobs, never held whole).

Paths are resolved as Ollama's CLI resolves them: absolute ones as they are, ``~`` to the gateway user's home,
others against a base directory (the ``modelfile_dir`` setting, else the gateway's working directory). Only
GGUF files can be imported (a directory of safetensors would need converting).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from shared_ollama.errors import InvalidRequest

BLOCK = 1 << 20
"""Bytes read (and hashed, and sent) at a time."""


def resolve(reference: str, base: Path, *, instruction: str) -> Path:
    """The regular file ``reference`` names (a 400 naming the Modelfile instruction when there is none)."""
    path = Path(reference.strip()).expanduser()
    if not path.is_absolute():
        path = base / path
    path = path.resolve()
    if path.is_dir():
        raise InvalidRequest(
            f"{instruction} {reference}: a directory; only a GGUF file can be imported (convert safetensors first)",
            param="modelfile",
        )
    if not path.is_file():
        raise InvalidRequest(
            f"{instruction} {reference}: no such file on the gateway's machine (resolved to {path})", param="modelfile"
        )
    return path


def _fingerprint(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
            size += len(block)
    return "sha256:" + digest.hexdigest(), size


async def fingerprint(path: Path) -> tuple[str, int]:
    """The file's digest (``sha256:<hex>``) and size, computed in a worker thread."""
    return await asyncio.to_thread(_fingerprint, path)


async def file_blocks(path: Path) -> AsyncIterator[bytes]:
    """The file's bytes, one block at a time, each read in a worker thread."""
    handle: BinaryIO = await asyncio.to_thread(open, path, "rb")
    try:
        while block := await asyncio.to_thread(handle.read, BLOCK):
            yield block
    finally:
        handle.close()
