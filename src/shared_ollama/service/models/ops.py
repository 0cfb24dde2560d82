"""Model management through the engine: list, show, create, copy, delete, pull, load, unload.

The engine (Ollama or the embedded one) does the work; this module speaks its API: Ollama's structured
``/api/create`` (Modelfile text is parsed here, since Ollama stopped accepting it), ``/api/copy``,
``DELETE /api/delete``, streamed ``/api/pull``, and ``keep_alive`` for loading and unloading (an empty
generate for text models, an empty embed for embedding models). Whoever changes models also tells the
gateway's caches about it (``on_change``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from shared_ollama.backends.client import EngineApi
from shared_ollama.errors import ModelNotFound
from shared_ollama.protocol.modelfile import is_file_reference, parse_modelfile
from shared_ollama.service.models.local_files import file_blocks, fingerprint, resolve

JsonDict = dict[str, Any]


class ModelOps:
    def __init__(
        self,
        client: EngineApi,
        default_keep_alive: str,
        on_change: Callable[[str], None],
        pinned: Callable[[str], JsonDict] | None = None,
    ) -> None:
        self.client = client
        self.default_keep_alive = default_keep_alive
        self._on_change = on_change
        self._pinned = pinned or (lambda model: {})

    async def tags(self) -> JsonDict:
        return await self.client.request_json("GET", "/api/tags")

    async def ps(self) -> JsonDict:
        return await self.client.request_json("GET", "/api/ps")

    async def show(self, name: str) -> JsonDict:
        return await self.client.request_json("POST", "/api/show", {"model": name})

    async def create(self, body: JsonDict) -> JsonDict:
        """Ollama's structured create (``stream`` off); a legacy ``modelfile`` field is parsed first."""
        body = dict(body)
        if isinstance(body.get("modelfile"), str):
            name = str(body.get("model") or body.get("name") or "")
            parsed = parse_modelfile(body.pop("modelfile")).to_create_request(name)
            body = {**parsed, **{k: v for k, v in body.items() if k not in ("name",)}}
        body["stream"] = False
        result = await self.client.request_json("POST", "/api/create", body)
        self._on_change(str(body.get("model", "")))
        return result

    async def create_from_modelfile(self, name: str, modelfile: str, files_dir: Path | None = None) -> JsonDict:
        """Create ``name`` from Modelfile text. With ``files_dir``, a ``FROM`` path and ``ADAPTER`` files on this
        machine (relative ones under ``files_dir``) are uploaded to the engine as blobs first, as ``ollama create``
        does; without it they are refused (a 400 naming the line)."""
        parsed = parse_modelfile(modelfile)
        if files_dir is None or not (parsed.adapters or is_file_reference(parsed.from_)):
            return await self.create({"model": name, "modelfile": modelfile})
        files = None
        if is_file_reference(parsed.from_):
            path = resolve(parsed.from_, files_dir, instruction="FROM")
            files = {path.name: await self.push_file(path)}
        adapters = {}
        for reference in parsed.adapters:
            path = resolve(reference, files_dir, instruction="ADAPTER")
            adapters[path.name] = await self.push_file(path)
        return await self.create(parsed.to_create_request(name, files=files, adapters=adapters))

    async def push_file(self, path: Path) -> str:
        """Upload a file of this machine to the engine as a blob (unless it has it already); returns its digest."""
        digest, size = await fingerprint(path)
        if not await self.blob_exists(digest):
            await self.upload_blob(digest, file_blocks(path), size)
        return digest

    async def blob_exists(self, digest: str) -> bool:
        """Ollama's ``HEAD /api/blobs/<digest>``: whether the engine has the blob."""
        try:
            await self.client.request("HEAD", f"/api/blobs/{digest}")
        except ModelNotFound:
            return False
        return True

    async def upload_blob(self, digest: str, chunks: AsyncIterator[bytes], length: int | None = None) -> int:
        """Ollama's ``POST /api/blobs/<digest>``, the body (``length`` bytes when known) streamed through; the
        engine's status (201 or 200)."""
        return await self.client.upload(f"/api/blobs/{digest}", chunks, length)

    async def copy(self, source: str, destination: str) -> None:
        await self.client.request("POST", "/api/copy", {"source": source, "destination": destination})
        self._on_change(destination)

    async def delete(self, name: str) -> None:
        await self.client.request("DELETE", "/api/delete", {"model": name})
        self._on_change(name)

    @asynccontextmanager
    async def pull(self, name: str, *, insecure: bool = False) -> AsyncIterator[AsyncIterator[bytes]]:
        """The engine's pull progress, as raw NDJSON lines."""
        async with self.client.stream("/api/pull", {"model": name, "insecure": insecure, "stream": True}) as lines:
            yield lines
        self._on_change(name)

    async def _keep_alive(self, name: str, keep_alive: str | int) -> JsonDict:
        show = await self.show(name)
        path = "/api/embed" if "embedding" in (show.get("capabilities") or []) else "/api/generate"
        body: JsonDict = {"model": name, "keep_alive": keep_alive, "stream": False}
        pinned = self._pinned(name)
        if pinned and keep_alive != 0:  # loaded as requests will use it, or the first request would reload it
            body["options"] = pinned
        raw = await self.client.request("POST", path, body)
        parsed = orjson.loads(raw) if raw else {}
        return parsed if isinstance(parsed, dict) else {}

    async def load(self, name: str, keep_alive: str | int | None = None) -> JsonDict:
        return await self._keep_alive(name, keep_alive if keep_alive is not None else self.default_keep_alive)

    async def unload(self, name: str) -> JsonDict:
        return await self._keep_alive(name, 0)
