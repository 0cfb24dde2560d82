"""The HTTP side of Ollama's registry: manifests, small blobs read into memory, and resumable blob downloads.

A blob download asks for the bytes after the partial file's size (``Range: bytes=<size>-``) and follows the
registry's redirect to its CDN. A connection that breaks mid-body is resumed (up to five times in a row without
progress); a source that ignores the range starts the file over.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib

import aiohttp

from shared_ollama.engine.pull.download import PartialFile, in_thread
from shared_ollama.engine.pull.names import RegistryName
from shared_ollama.engine.pull.registry import MANIFEST_TYPE, Layer
from shared_ollama.errors import BackendError, ModelNotFound

_BATCH = 4 << 20
"""Bytes gathered before one write to the partial file (one hop to a worker thread)."""
_ATTEMPTS = 5
_BROKEN = (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, TimeoutError)


def session(connect_timeout: float = 30.0, read_timeout: float = 60.0) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
    return aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "shared-ollama"})


class RegistryClient:
    def __init__(self, http: aiohttp.ClientSession, base_url: str, name: RegistryName) -> None:
        self.http = http
        self.base_url = base_url
        self.name = name

    async def _refusal(self, resp: aiohttp.ClientResponse, what: str) -> BackendError | ModelNotFound:
        body = (await resp.read())[:300].decode("utf-8", "replace")
        if resp.status == 404:
            return ModelNotFound(
                f"pull model manifest: file does not exist: '{self.name.store_name}' ({what}) is not in the registry "
                f"at {self.base_url}"
            )
        if resp.status in (401, 403):
            return BackendError(
                f"the registry at {self.base_url} asks for authentication ({resp.status}) for {what}, which the "
                "embedded engine does not do; use a real Ollama for private registries"
            )
        return BackendError(f"the registry at {self.base_url} answered {resp.status} for {what}: {body}")

    async def manifest(self) -> bytes:
        url = self.base_url + self.name.manifest_path
        try:
            async with self.http.get(url, headers={"Accept": MANIFEST_TYPE}) as resp:
                if resp.status != 200:
                    raise await self._refusal(resp, "its manifest")
                return await resp.read()
        except aiohttp.ClientError as exc:
            raise BackendError(
                f"cannot reach the registry at {self.base_url}: {exc.__class__.__name__}: {exc}"
            ) from exc

    async def small_blob(self, layer: Layer, limit: int) -> bytes:
        """A small layer's bytes (a config or a text), checked against its digest."""
        url = self.base_url + self.name.blob_path(layer.digest)
        try:
            async with self.http.get(url) as resp:
                if resp.status != 200:
                    raise await self._refusal(resp, f"blob {layer.digest}")
                data = await resp.content.read(limit + 1)
        except aiohttp.ClientError as exc:
            raise BackendError(f"cannot fetch {layer.digest} from {self.base_url}: {exc}") from exc
        if len(data) > limit:
            raise BackendError(f"blob {layer.digest} of '{self.name.store_name}' is larger than {limit} bytes")
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != layer.digest or len(data) != layer.size:
            raise BackendError(f"digest mismatch for {layer.digest}: got {got} ({len(data)} bytes); nothing was kept")
        return data

    async def download(self, layer: Layer, partial: PartialFile) -> None:
        """Fetch ``layer`` into ``partial``, resuming from what it holds (and after broken connections)."""
        offset = await in_thread(partial.open)
        failures = 0
        while offset < layer.size:
            try:
                offset = await self._fetch_from(layer, partial, offset)
                failures = 0
            except _BROKEN as exc:
                failures = 0 if partial.size > offset else failures + 1
                offset = partial.size
                if failures >= _ATTEMPTS:
                    raise BackendError(
                        f"the download of {layer.digest} from {self.base_url} keeps breaking: {exc}; pull again "
                        "to resume it"
                    ) from exc
                await asyncio.sleep(0.25 * 2**failures)  # backoff before resuming
            except aiohttp.ClientError as exc:
                raise BackendError(f"cannot fetch {layer.digest} from {self.base_url}: {exc}") from exc

    async def _fetch_from(self, layer: Layer, partial: PartialFile, offset: int) -> int:
        url = self.base_url + self.name.blob_path(layer.digest)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with self.http.get(url, headers=headers) as resp:
            if resp.status not in (200, 206):
                raise await self._refusal(resp, f"blob {layer.digest}")
            if offset and resp.status == 200:  # the range was ignored: start over
                await in_thread(functools.partial(partial.truncate, 0))
            elif offset and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                raise BackendError(f"the registry answered the range of {layer.digest} with another range")
            batch = bytearray()
            async for chunk in resp.content.iter_chunked(1 << 20):
                batch += chunk
                if len(batch) >= _BATCH:
                    await in_thread(functools.partial(partial.write, bytes(batch)))
                    batch.clear()
            if batch:
                await in_thread(functools.partial(partial.write, bytes(batch)))
        if partial.size < layer.size:
            raise aiohttp.ClientPayloadError(f"the body ended after {partial.size} of {layer.size} bytes")
        return partial.size
