"""``/api/pull`` for the names that are not offline defaults: Hugging Face repositories and Ollama's registry.

A pull lists its source (``pulling manifest``), says what it chose, checks the disk, downloads what the store
lacks (one progress line about every hundredth of a layer, as bytes arrive), verifies the digests
(``verifying sha256 digest``), moves the blobs in and writes the model's entry (``writing manifest``), then says
``success``. A failure is one ``{"error": ...}`` line (streamed), or the error's status (``stream: false``).
Pulls of one name share one job (``jobs.py``); a job whose clients have all gone stops and keeps its partial
files for the next pull.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from shared_ollama.engine.handlers import ApiError, NDJSONStream, json_response, ndjson_line
from shared_ollama.engine.pull import hf, progress
from shared_ollama.engine.pull.download import (
    DownloadCancelled,
    Expected,
    PartialFile,
    check_disk,
    free_bytes,
    in_thread,
    move_into,
    verify,
)
from shared_ollama.engine.pull.gguf_header import NotGGUF, architecture, unsupported
from shared_ollama.engine.pull.hf_files import FileChoiceError, RemoteFile, choose
from shared_ollama.engine.pull.install import Pulled, install
from shared_ollama.engine.pull.jobs import PullJob, PullJobs
from shared_ollama.engine.pull.names import HfName, RegistryName, parse_pull_name
from shared_ollama.engine.pull.registry import (
    MAX_TEXT_LAYER,
    SKIPPED,
    TEMPLATES,
    Layer,
    check_config,
    fields_from_texts,
)
from shared_ollama.engine.pull.registry import plan as registry_plan
from shared_ollama.engine.store import ModelStore
from shared_ollama.errors import BackendError, InvalidRequest, ModelNotFound
from shared_ollama.settings import Settings
from shared_ollama.web import until_disconnect

if TYPE_CHECKING:
    from shared_ollama.engine.pull.registry_client import RegistryClient

JsonDict = dict[str, Any]
Fetch = Callable[[PartialFile], Awaitable[None]]
_TEMPLATE_NOTE = (
    "keeping the GGUF's own chat template: the registry's template is a Go template, which llama.cpp cannot run"
)


@dataclass
class Blob:
    expected: Expected
    label: str
    """The file or layer, for messages."""
    fetch: Fetch
    model: bool = False
    """A model GGUF (its header is checked as it arrives)."""

    @property
    def digest(self) -> str | None:
        return f"sha256:{self.expected.sha256}" if self.expected.sha256 else None

    @property
    def shown(self) -> str:
        """The digest progress lines name (a git-kept file's blob id until its sha256 is known)."""
        return self.digest or f"sha1:{self.expected.git_sha1}"


@dataclass
class Target:
    name: str
    parts: list[Blob]
    projector: Blob | None = None
    adapters: tuple[Blob, ...] = ()
    fields: dict[str, Any] | None = None

    @property
    def blobs(self) -> list[Blob]:
        return [*self.parts, *([self.projector] if self.projector else []), *self.adapters]


def _check_header(name: str) -> Callable[[bytes], None]:
    def check(head: bytes) -> None:
        try:
            arch = architecture(head)
        except NotGGUF as exc:
            raise InvalidRequest(f"cannot run '{name}': its model file is {exc}") from None
        why = unsupported(arch) if arch is not None else None
        if why is not None:
            raise InvalidRequest(f"cannot run '{name}': {why}")

    return check


class Puller:
    def __init__(self, store: ModelStore, settings: Settings, unload: Callable[[str], Awaitable[None]]) -> None:
        self.store = store
        self.settings = settings
        self.unload = unload
        self.jobs = PullJobs()

    async def respond(self, request: Request, body: JsonDict, name: str) -> Response:
        insecure = body.get("insecure", False)
        if not isinstance(insecure, bool):
            raise ApiError(400, "insecure must be true or false")
        following = self.follow(name, insecure)
        if body.get("stream") is False:
            return await until_disconnect(request, self._whole(following))

        async def lines() -> AsyncIterator[bytes]:
            async with following as (_, followed):
                async for line in followed:
                    yield ndjson_line(line)

        stream = lines()
        return NDJSONStream(stream, stream.aclose)

    def follow(
        self, name: str, insecure: bool = False
    ) -> contextlib.AbstractAsyncContextManager[tuple[PullJob, AsyncIterator[JsonDict]]]:
        """Follow the pull of ``name`` (joining the one running, if any) while the block runs; ApiError (400)
        for a name that cannot be pulled."""
        try:
            source = parse_pull_name(name)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        if insecure and (isinstance(source, HfName) or source.host is None):
            raise ApiError(400, "insecure applies to a registry host named in the model (host/namespace/model)")
        return self.jobs.follow(source.store_name, functools.partial(self._run, source=source, insecure=insecure))

    async def _whole(
        self, following: contextlib.AbstractAsyncContextManager[tuple[PullJob, AsyncIterator[JsonDict]]]
    ) -> Response:
        last: JsonDict = {}
        async with following as (job, followed):
            async for line in followed:
                last = line
        if job.failure is not None:
            raise ApiError(job.failure.status, job.failure.message)
        return json_response(last)

    # ------------------------------------------------------------------ one pull

    async def _run(self, job: PullJob, source: HfName | RegistryName, insecure: bool) -> None:
        job.emit(progress.status(progress.PULLING_MANIFEST))
        async with contextlib.AsyncExitStack() as stack:
            if isinstance(source, HfName):
                target = await self._hf_target(job, source)
            else:  # aiohttp is imported by the first registry pull, not at the engine's start (bench/coldstart.py)
                from shared_ollama.engine.pull.registry_client import RegistryClient, session

                http = await stack.enter_async_context(session())
                base = source.base_url(self.settings.registry_url, insecure)
                target = await self._registry_target(job, RegistryClient(http, base, source))
            digests = await self._fetch(job, target)
        job.emit(progress.status(progress.WRITING))
        pulled = Pulled(
            target.name,
            [digests[id(b)] for b in target.parts],
            digests[id(target.projector)] if target.projector else None,
            [digests[id(b)] for b in target.adapters],
            target.fields or {},
        )
        _, replaced = await asyncio.to_thread(install, self.store, pulled)
        if replaced is not None:
            await self.unload(replaced.name)  # the next request loads the new one
        job.emit(progress.status(progress.SUCCESS))

    def _partial_path(self, expected: Expected) -> Path:
        return self.store.root / "partial" / f"{expected.key}.partial"

    def _have(self, blob: Blob) -> bool:
        return blob.digest is not None and self.store.blob_path(blob.digest).is_file()

    async def _fetch(self, job: PullJob, target: Target) -> dict[int, str]:
        """Download what the store lacks, verify it and move it in; returns each blob's digest (by id)."""
        missing = [b for b in target.blobs if not self._have(b)]
        needed = 0
        for blob in missing:
            partial = self._partial_path(blob.expected)
            needed += blob.expected.size - (partial.stat().st_size if partial.is_file() else 0)
        check_disk(needed, free_bytes(self.store.root), self.settings.min_free_disk_bytes, self.store.root)
        digests: dict[int, str] = {}
        waiting = functools.partial(job.emit, progress.status("waiting for another pull downloading the same files"))
        async with self.jobs.blobs([b.expected.key for b in missing], waiting):
            fetched: list[tuple[Blob, Path, tuple[str, str | None]]] = []
            for blob in target.blobs:
                if self._have(blob):
                    assert blob.digest is not None
                    job.emit(progress.layer(blob.digest, blob.expected.size, blob.expected.size))
                    digests[id(blob)] = blob.digest
                else:
                    path = self._partial_path(blob.expected)
                    fetched.append((blob, path, await self._download(job, blob, path, target.name)))
            job.emit(progress.status(progress.VERIFYING))
            for blob, path, computed in fetched:
                digest = verify(path, computed, blob.expected, blob.label)
                move_into(path, self.store.blob_path(digest))
                digests[id(blob)] = digest
        return digests

    async def _download(self, job: PullJob, blob: Blob, path: Path, name: str) -> tuple[str, str | None]:
        loop = asyncio.get_running_loop()
        reporter = progress.Reporter(blob.expected.size)

        def report(size: int) -> None:
            if reporter.due(size):
                job.emit(progress.layer(blob.shown, blob.expected.size, size))

        partial = PartialFile(
            path,
            blob.expected,
            on_size=lambda size: loop.call_soon_threadsafe(report, size),
            inspect=_check_header(name) if blob.model else None,
            cancelled=job.stopped.is_set,
        )
        try:
            await blob.fetch(partial)
            return await in_thread(partial.finish)
        except InvalidRequest:
            partial.abandon()
            await asyncio.to_thread(path.unlink, missing_ok=True)  # a model that cannot run: nothing to resume
            raise
        except (asyncio.CancelledError, DownloadCancelled):
            partial.abandon()  # kept for the next pull
            raise
        except BaseException:
            partial.abandon()
            raise

    # ------------------------------------------------------------------ sources

    async def _hf_target(self, job: PullJob, name: HfName) -> Target:
        commit, files = await in_thread(functools.partial(hf.list_files, self.settings, name))
        try:
            choice = choose(files, name.quant, name.repo_id)
        except FileChoiceError as exc:
            if exc.status == 404:
                raise ModelNotFound(str(exc), param="model") from None
            raise InvalidRequest(str(exc)) from None
        job.emit(progress.status(choice.note))

        def blob(file: RemoteFile, model: bool = False) -> Blob:
            async def fetch(partial: PartialFile) -> None:
                await in_thread(functools.partial(hf.download, self.settings, name, commit, file, partial))

            expected = Expected(file.size, file.sha256, None if file.sha256 else file.blob_id)
            if expected.sha256 is None and expected.git_sha1 is None:
                raise BackendError(f"the hub states no digest for {file.path}; it cannot be verified")
            return Blob(expected, file.path, fetch, model)

        parts = [blob(file, model=index == 0) for index, file in enumerate(choice.parts)]
        projector = blob(choice.projector) if choice.projector else None
        return Target(name.store_name, parts, projector)

    async def _registry_target(self, job: PullJob, client: RegistryClient) -> Target:
        name = client.name.store_name
        plan = registry_plan(await client.manifest(), name)
        if plan.config is not None:
            job.emit(progress.layer(plan.config.digest, plan.config.size))
            check_config(await client.small_blob(plan.config, MAX_TEXT_LAYER), name)
            job.emit(progress.layer(plan.config.digest, plan.config.size, plan.config.size))
        texts: list[tuple[str, bytes]] = []
        for layer in plan.texts:
            job.emit(progress.layer(layer.digest, layer.size))
            texts.append((layer.media_type, await client.small_blob(layer, MAX_TEXT_LAYER)))
            job.emit(progress.layer(layer.digest, layer.size, layer.size))
        fields, _ = fields_from_texts(texts, name)
        if any(media in TEMPLATES for media, _ in texts):
            job.emit(progress.status(_TEMPLATE_NOTE))
        for layer in plan.skipped:
            what = SKIPPED.get(layer.media_type, f"media type {layer.media_type}")
            job.emit(progress.status(f"skipping layer {progress.short_digest(layer.digest)} ({what}): not used here"))

        def blob(layer: Layer, model: bool = False) -> Blob:
            async def fetch(partial: PartialFile) -> None:
                await client.download(layer, partial)

            return Blob(Expected(layer.size, layer.digest.removeprefix("sha256:")), layer.digest, fetch, model)

        projector = blob(plan.projector) if plan.projector else None
        adapters = tuple(blob(layer) for layer in plan.adapters)
        return Target(name, [blob(plan.model, model=True)], projector, adapters, fields)
