"""Resumable downloads into the model store: a partial file per blob, hashed as it is written, verified, moved in.

- ``<store>/partial/<sha256 hex>.partial`` holds the bytes so far. A download that stops (its clients gone, the
  connection cut, the engine killed) leaves it, and the next pull of that blob resumes from its size, hashing
  what is already there first.
- Bytes are hashed in a thread of their own as they are written (sha256, the store's address; also git's blob
  sha1 when the hub states only that), so the download is not slowed by hashing on another core and verifying at
  the end costs nothing more.
- A blob whose digest is not the one stated is deleted and reported; it never reaches the store.
- The first megabyte of a model file is inspected (its GGUF architecture) as soon as it has arrived, so a model
  llama.cpp cannot run is refused before the rest is fetched.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from shared_ollama.engine.pull.gguf_header import HEADER_BYTES
from shared_ollama.errors import BackendError, InsufficientStorage

_QUEUED_CHUNKS = 8
_READ_BLOCK = 4 << 20
T = TypeVar("T")


class DownloadCancelled(Exception):
    """Every client of the pull has gone; the partial file is kept for the next pull."""


@dataclass(frozen=True)
class Expected:
    """What the source states about a blob: its size and its sha256 (or, for a file kept in git, its blob sha1)."""

    size: int
    sha256: str | None
    git_sha1: str | None = None

    @property
    def key(self) -> str:
        return self.sha256 or f"git-{self.git_sha1}"


class _Hasher:
    """sha256 (and optionally git's blob sha1) of the bytes fed, computed in a thread of its own."""

    def __init__(self, git_size: int | None) -> None:
        self.sha256 = hashlib.sha256()
        self.sha1 = None if git_size is None else hashlib.sha1(f"blob {git_size}\0".encode(), usedforsecurity=False)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED_CHUNKS)
        self._thread = threading.Thread(target=self._run, name="pull-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self.sha256.update(chunk)
            if self.sha1 is not None:
                self.sha1.update(chunk)

    def feed(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def finish(self) -> tuple[str, str | None]:
        self._queue.put(None)
        self._thread.join()
        return self.sha256.hexdigest(), None if self.sha1 is None else self.sha1.hexdigest()


class PartialFile:
    """The file-like sink of one download (``write``, ``tell``, ``seek``, ``truncate``, as ``huggingface_hub``'s
    ``http_get`` uses it): appends to the partial file, feeds the hasher, reports the size and checks the header.
    """

    def __init__(
        self,
        path: Path,
        expected: Expected,
        on_size: Callable[[int], None] = lambda size: None,
        inspect: Callable[[bytes], None] | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.path = path
        self.expected = expected
        self.on_size = on_size
        self.inspect = inspect
        self.cancelled = cancelled
        self.size = 0
        self._position = 0
        self._head = bytearray()
        self._file = None
        self._hasher: _Hasher | None = None

    def open(self) -> int:
        """Open (creating it, or keeping what an earlier download left); returns the size to resume from."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > self.expected.size:
            self.path.unlink()  # longer than the blob can be: not a prefix of it
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self._restart(self.path.stat().st_size)
        return self.size

    def _restart(self, keep: int) -> None:
        """Keep the first ``keep`` bytes and hash them anew."""
        assert self._file is not None
        if self._hasher is not None:
            self._hasher.finish()
        self._file.flush()
        self._file.truncate(keep)
        self._hasher = _Hasher(self.expected.size if self.expected.git_sha1 else None)
        self._head = bytearray()
        with open(self.path, "rb") as existing:
            while block := existing.read(min(_READ_BLOCK, keep - existing.tell())):
                self._hasher.feed(block)
                if len(self._head) < HEADER_BYTES:
                    self._head += block[: HEADER_BYTES - len(self._head)]
        self.size = self._position = keep
        self._check_head()
        self.on_size(self.size)

    def _check_head(self) -> None:
        if self.inspect is not None and (len(self._head) >= HEADER_BYTES or self.size >= self.expected.size):
            inspect, self.inspect = self.inspect, None
            inspect(bytes(self._head))

    def write(self, data: bytes) -> int:
        if self.cancelled():
            raise DownloadCancelled
        assert self._file is not None and self._hasher is not None
        if self.size + len(data) > self.expected.size:
            raise BackendError(f"the source sent more than the {self.expected.size} bytes it stated for the blob")
        self._file.write(data)
        self._hasher.feed(bytes(data))
        self.size += len(data)
        self._position = self.size
        if self.inspect is not None and len(self._head) < HEADER_BYTES:
            self._head += data[: HEADER_BYTES - len(self._head)]
        self._check_head()
        self.on_size(self.size)
        return len(data)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        self._position = offset if whence == 0 else self.size + offset if whence == 2 else self._position + offset
        return self._position

    def truncate(self, size: int | None = None) -> int:
        """Drop what follows ``size`` (the source ignored a range request and starts over)."""
        self._restart(self._position if size is None else size)
        return self.size

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def finish(self) -> tuple[str, str | None]:
        """Close the file and return its (sha256, git sha1) hex digests."""
        assert self._hasher is not None
        self.close_file()
        digests = self._hasher.finish()
        self._hasher = None
        return digests

    def close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def abandon(self) -> None:
        """Stop hashing and close, keeping the partial file."""
        self.close_file()
        if self._hasher is not None:
            self._hasher.finish()
            self._hasher = None


def verify(partial: Path, computed: tuple[str, str | None], expected: Expected, what: str) -> str:
    """The blob's ``sha256:<hex>`` when ``partial`` is what the source stated; otherwise it is deleted and a
    BackendError says so."""
    sha256, sha1 = computed
    size = partial.stat().st_size
    wanted = expected.sha256 or expected.git_sha1
    got = sha256 if expected.sha256 else sha1
    if size != expected.size or got != wanted:
        partial.unlink(missing_ok=True)
        kind = "sha256" if expected.sha256 else "git blob sha1"
        raise BackendError(
            f"digest mismatch for {what}: expected {kind} {wanted} ({expected.size} bytes), got {got} ({size} bytes); "
            "the corrupted download was deleted (pull again to fetch it anew)"
        )
    return f"sha256:{sha256}"


def move_into(partial: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, target)


def free_bytes(path: Path) -> int:
    """Free space on the disk holding ``path`` (or its nearest existing parent)."""
    for place in (path, *path.parents):
        if place.exists():
            return shutil.disk_usage(place).free
    return 0


def check_disk(needed: int, free: int, keep_free: int, root: Path) -> None:
    """Refuse (507) a pull of ``needed`` more bytes that would leave less than ``keep_free`` of ``free``."""
    if needed > 0 and free - needed < keep_free:
        raise InsufficientStorage(
            f"not enough disk space for this pull: it needs {needed} bytes, {root} has {free} free and "
            f"{keep_free} must stay free (min_free_disk_bytes); nothing was downloaded"
        )


async def in_thread(work: Callable[[], T], on_cancel: Callable[[], None] = lambda: None) -> T:
    """``work()`` in a worker thread. Cancelled, it calls ``on_cancel`` and waits for the thread to end before
    re-raising, so nothing writes a partial file once its pull has let go of it."""
    future = asyncio.get_running_loop().run_in_executor(None, work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        on_cancel()
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what the caller hears of
        raise
