"""A stand-in for the Hugging Face hub and Ollama's registry on a loopback port, for pull tests (no internet).

Hugging Face, as ``huggingface_hub`` asks:

- ``GET /api/models/{owner}/{repo}[/revision/{rev}]``: the model info with its files (``siblings``: size, git
  blob id, LFS sha256 and size);
- ``GET|HEAD /{owner}/{repo}/resolve/{rev}/{path}``: the file, with ``Range``; ``ETag`` / ``X-Linked-Etag`` (the
  sha256), ``X-Linked-Size``, ``X-Repo-Commit``, ``Accept-Ranges``;
- a gated repository answers ``401`` with ``X-Error-Code: GatedRepo`` unless the request carries its token.

Ollama's registry:

- ``GET /v2/{namespace}/{model}/manifests/{tag}``: the manifest;
- ``GET /v2/{namespace}/{model}/blobs/{digest}``: a 307 to ``/cdn/{namespace}/{model}/{digest}``, which serves
  the blob with ``Range``.

Faults, by a file's key (``owner/repo/path`` or ``namespace/model/sha256:...``): ``corrupt`` (the listing states
the right sha256, one byte served is wrong), ``stall(key, at)`` (responses pause after byte ``at`` until the
returned event is set or the client goes) and ``cut_once(key, at)`` (the next response ends after byte ``at``,
connection closed). Every request is recorded (``requests``, ``fetches(key)``).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
_CHUNK = 4 << 20
_STALL_LIMIT = 120.0


@dataclass
class Content:
    data: bytes | None = None
    path: Path | None = None
    corrupt: bool = False

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size  # type: ignore[union-attr]

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            chunk = self.data[start:end]
        else:
            with open(self.path, "rb") as handle:  # type: ignore[arg-type]
                handle.seek(start)
                chunk = handle.read(end - start)
        middle = self.size // 2
        if self.corrupt and start <= middle < end:
            flipped = bytearray(chunk)
            flipped[middle - start] ^= 0xFF
            chunk = bytes(flipped)
        return chunk

    def sha256(self) -> str:
        digest = hashlib.sha256()
        if self.data is not None:
            digest.update(self.data)
        else:
            with open(self.path, "rb") as handle:  # type: ignore[arg-type]
                while block := handle.read(4 << 20):
                    digest.update(block)
        return digest.hexdigest()


@dataclass
class Record:
    method: str
    path: str
    key: str | None = None
    range_start: int | None = None
    status: int = 0
    sent: int = 0
    outcome: str = "open"
    """``open`` while it runs, then ``complete``, ``gone`` (the client left), ``cut`` or ``stalled-released``."""
    authorization: str | None = None


@dataclass
class _Repo:
    files: dict[str, tuple[Content, str, str]]
    """path -> (content, its true sha256, its git blob id)."""
    token: str | None = None


@dataclass
class _Fault:
    stall_at: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    cut_at: int | None = None


class ModelHub:
    def __init__(self) -> None:
        self.requests: list[Record] = []
        self._repos: dict[str, _Repo] = {}
        self._manifests: dict[str, bytes] = {}
        self._blobs: dict[str, Content] = {}
        self._faults: dict[str, _Fault] = {}
        self._lock = threading.Lock()
        self.url = ""

    # ------------------------------------------------------------------ content

    def add_repo(
        self, repo_id: str, files: dict[str, Path | bytes], *, token: str | None = None, corrupt: tuple[str, ...] = ()
    ) -> dict[str, str]:
        """Serve a Hugging Face repository; returns each file's sha256 (as the listing states it)."""
        served = {}
        for path, source in files.items():
            content = Content(data=source) if isinstance(source, bytes) else Content(path=source)
            sha = content.sha256()
            lfs = path.endswith(".gguf")
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {content.size}\n"
            served[path] = (content, sha, _git_blob_id(pointer.encode() if lfs else content.read(0, content.size)))
            content.corrupt = path in corrupt
        self._repos[repo_id] = _Repo(served, token)
        return {path: sha for path, (_, sha, _) in served.items()}

    def add_registry_model(
        self, name: str, layers: list[tuple[str, Path | bytes]], config: dict[str, Any] | None = None,
        *, corrupt: tuple[str, ...] = (),
    ) -> dict[str, Any]:  # fmt: skip
        """Serve ``namespace/model:tag`` from the registry; ``corrupt`` names media types served wrong."""
        path, _, tag = name.rpartition(":")
        namespace, _, model = path.rpartition("/")
        base = f"{namespace or 'library'}/{model}"
        config_blob = orjson.dumps(config if config is not None else default_config())
        entries = []
        for media_type, source in [("application/vnd.docker.container.image.v1+json", config_blob), *layers]:
            content = Content(data=source) if isinstance(source, bytes) else Content(path=source)
            digest = "sha256:" + content.sha256()
            content.corrupt = media_type in corrupt
            self._blobs[f"{base}/{digest}"] = content
            entries.append({"mediaType": media_type, "digest": digest, "size": content.size})
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": entries[0], "layers": entries[1:]}
        self._manifests[f"{base}:{tag}"] = orjson.dumps(manifest)
        return manifest

    def manifest(self, name: str) -> dict[str, Any]:
        """The manifest served for ``namespace/model:tag`` (``model:tag`` in ``library``)."""
        path, _, tag = name.rpartition(":")
        namespace, _, model = path.rpartition("/")
        return dict(orjson.loads(self._manifests[f"{namespace or 'library'}/{model}:{tag}"]))

    # ------------------------------------------------------------------ faults and records

    def stall(self, key: str, at: int) -> threading.Event:
        """Responses for ``key`` pause after byte ``at`` until the returned event is set (or the client goes)."""
        fault = self._faults.setdefault(key, _Fault())
        fault.stall_at = at
        return fault.release

    def cut_once(self, key: str, at: int) -> None:
        self._faults.setdefault(key, _Fault()).cut_at = at

    def fetches(self, key: str) -> list[Record]:
        """The GETs of ``key``'s bytes (not the redirects), in order."""
        with self._lock:
            return [r for r in self.requests if r.key == key and r.method == "GET" and r.status in (200, 206)]

    def _record(self, request: web.Request, key: str | None = None) -> Record:
        record = Record(request.method, request.path, key, authorization=request.headers.get("Authorization"))
        with self._lock:
            self.requests.append(record)
        return record

    # ------------------------------------------------------------------ Hugging Face

    def _repo(self, request: web.Request) -> _Repo:
        repo_id = f"{request.match_info['owner']}/{request.match_info['repo']}"
        repo = self._repos.get(repo_id)
        if repo is None:
            raise web.HTTPNotFound(headers={"X-Error-Code": "RepoNotFound"}, text='{"error":"Repository not found"}')
        if repo.token is not None and request.headers.get("Authorization") != f"Bearer {repo.token}":
            raise web.HTTPUnauthorized(
                headers={"X-Error-Code": "GatedRepo"}, text=f'{{"error":"Access to model {repo_id} is restricted"}}'
            )
        return repo

    async def _model_info(self, request: web.Request) -> web.Response:
        self._record(request)
        repo = self._repo(request)
        repo_id = f"{request.match_info['owner']}/{request.match_info['repo']}"
        siblings = []
        for path, (content, sha, blob_id) in sorted(repo.files.items()):
            sibling: dict[str, Any] = {"rfilename": path, "size": content.size, "blobId": blob_id}
            if path.endswith(".gguf"):
                sibling["lfs"] = {"sha256": sha, "size": content.size, "pointerSize": 134}
            siblings.append(sibling)
        info = {"_id": repo_id, "id": repo_id, "modelId": repo_id, "sha": COMMIT, "private": False,
                "gated": repo.token is not None and "auto", "disabled": False, "tags": ["gguf"],
                "library_name": "gguf", "siblings": siblings}  # fmt: skip
        return web.json_response(info)

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        repo = self._repo(request)
        path = request.match_info["path"]
        key = f"{request.match_info['owner']}/{request.match_info['repo']}/{path}"
        record = self._record(request, key)
        found = repo.files.get(path)
        if found is None:
            record.status = 404
            raise web.HTTPNotFound(headers={"X-Error-Code": "EntryNotFound"}, text='{"error":"Entry not found"}')
        content, sha, _ = found
        headers = {"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(content.size),
                   "X-Repo-Commit": COMMIT}  # fmt: skip
        return await self._serve(request, record, content, headers)

    # ------------------------------------------------------------------ Ollama's registry

    async def _manifest(self, request: web.Request) -> web.Response:
        self._record(request)
        base = f"{request.match_info['namespace']}/{request.match_info['model']}"
        manifest = self._manifests.get(f"{base}:{request.match_info['tag']}")
        if manifest is None:
            return web.json_response(
                {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}, status=404
            )
        return web.Response(body=manifest, content_type=MANIFEST_TYPE)

    async def _blob(self, request: web.Request) -> web.Response:
        self._record(request).status = 307
        base = f"{request.match_info['namespace']}/{request.match_info['model']}"
        raise web.HTTPTemporaryRedirect(f"/cdn/{base}/{request.match_info['digest']}")

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        key = f"{request.match_info['namespace']}/{request.match_info['model']}/{request.match_info['digest']}"
        record = self._record(request, key)
        content = self._blobs.get(key)
        if content is None:
            record.status = 404
            raise web.HTTPNotFound(text="blob unknown")
        return await self._serve(request, record, content, {})

    # ------------------------------------------------------------------ bytes, with Range and faults

    async def _serve(
        self, request: web.Request, record: Record, content: Content, headers: dict[str, str]
    ) -> web.StreamResponse:
        size = content.size
        start = 0
        spec = request.headers.get("Range", "")
        if spec.startswith("bytes=") and spec.endswith("-") and spec[6:-1].isdigit():
            start = int(spec[6:-1])
            record.range_start = start
        status = 206 if spec else 200
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(size - start),
                   "Content-Type": "application/octet-stream"}  # fmt: skip
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        record.status = status
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        if request.method == "HEAD":
            record.outcome = "complete"
            return response
        fault = self._faults.get(record.key or "")
        try:
            position = start
            while position < size:
                end = min(size, position + _CHUNK)
                if fault is not None and fault.stall_at is not None and position < fault.stall_at < end:
                    end = fault.stall_at
                if fault is not None and fault.cut_at is not None and position < fault.cut_at < end:
                    end = fault.cut_at
                await response.write(content.read(position, end))
                position = end
                record.sent = position - start
                if fault is not None and fault.cut_at == position:
                    fault.cut_at = None
                    record.outcome = "cut"
                    request.transport.close()  # type: ignore[union-attr]
                    return response
                if fault is not None and fault.stall_at == position and not fault.release.is_set():
                    released = await asyncio.get_running_loop().run_in_executor(None, fault.release.wait, _STALL_LIMIT)
                    record.outcome = "stalled-released" if released else "stalled-timeout"
                    if request.transport is None or request.transport.is_closing():
                        record.outcome = "gone"
                        return response
            await response.write_eof()
            record.outcome = "complete"
        except (ConnectionError, asyncio.CancelledError):
            record.outcome = "gone"
            raise
        return response

    # ------------------------------------------------------------------ server

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/models/{owner}/{repo}", self._model_info)
        app.router.add_get("/api/models/{owner}/{repo}/revision/{revision}", self._model_info)
        app.router.add_route("GET", "/{owner}/{repo}/resolve/{revision}/{path:.+}", self._resolve)
        app.router.add_route("HEAD", "/{owner}/{repo}/resolve/{revision}/{path:.+}", self._resolve)
        app.router.add_get("/v2/{namespace}/{model}/manifests/{tag}", self._manifest)
        app.router.add_get("/v2/{namespace}/{model}/blobs/{digest}", self._blob)
        app.router.add_get("/cdn/{namespace}/{model}/{digest}", self._cdn)
        return app

    @contextmanager
    def running(self) -> Iterator[ModelHub]:
        """Serve on a free loopback port (``url``) in a thread of its own while the block runs."""
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(self._app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, name="model-hub", daemon=True)
        thread.start()
        if not started.wait(30):
            raise RuntimeError("the model hub stand-in did not start")
        try:
            yield self
        finally:
            for fault in self._faults.values():
                fault.release.set()
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()


def _git_blob_id(data: bytes) -> str:
    """Git's id of a blob holding ``data`` (for an LFS file, its pointer)."""
    digest = hashlib.sha1(f"blob {len(data)}\0".encode(), usedforsecurity=False)
    digest.update(data)
    return digest.hexdigest()


def default_config(family: str = "llama", file_type: str = "Q4_1") -> dict[str, Any]:
    """A registry config blob as Ollama writes it (``model_format``, ``model_family``...)."""
    return {"model_format": "gguf", "model_family": family, "model_families": [family], "model_type": "134.52M",
            "file_type": file_type, "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}}  # fmt: skip
