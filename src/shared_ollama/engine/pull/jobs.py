"""One running pull per model name, shared by every client that asks for it while it runs.

A job runs in a task of its own and appends its progress lines to a list; each client follows the list from the
start (a late client sees what the earlier ones saw, then the rest as it comes). When the last client leaves,
the job is cancelled (its downloads stop and keep their partial files) and forgotten at once, so a new pull of
the name starts a new job, which resumes them.

Two jobs never write one blob at the same time: a job holds its blobs' locks (taken in digest order) from the
first byte to the move into the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from shared_ollama.engine.pull import progress
from shared_ollama.errors import InternalError, SharedOllamaError

log = logging.getLogger(__name__)
JsonDict = dict[str, Any]
Runner = Callable[["PullJob"], Awaitable[None]]


class PullJob:
    def __init__(self, key: str) -> None:
        self.key = key
        self.lines: list[JsonDict] = []
        self.failure: SharedOllamaError | None = None
        self.done = False
        self.followers = 0
        self.task: asyncio.Task[None] | None = None
        self.stopped = threading.Event()
        """Set the moment its last client leaves: downloads in worker threads stop at their next write."""
        self._changed = asyncio.Event()

    def emit(self, line: JsonDict) -> None:
        self.lines.append(line)
        self._notify()

    def finish(self) -> None:
        self.done = True
        self._notify()

    def _notify(self) -> None:
        """Wake every follower (each waits on the event current when it looked)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self) -> AsyncIterator[JsonDict]:
        """The job's lines from the first, until it ends."""
        sent = 0
        while True:
            changed = self._changed
            if sent < len(self.lines):
                line = self.lines[sent]
                sent += 1
                yield line
            elif self.done:
                return
            else:
                await changed.wait()


class PullJobs:
    """The running pulls of one engine, by name, and the locks of the blobs they write."""

    def __init__(self) -> None:
        self._jobs: dict[str, PullJob] = {}
        self._blob_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        """Digest -> its lock and the pulls holding or waiting for it (forgotten when none is)."""

    def running(self) -> list[str]:
        return sorted(self._jobs)

    @contextlib.asynccontextmanager
    async def follow(self, key: str, runner: Runner) -> AsyncIterator[tuple[PullJob, AsyncIterator[JsonDict]]]:
        """Follow the pull of ``key`` (started with ``runner`` unless it runs already) while the block runs."""
        job = self._jobs.get(key)
        if job is None:
            job = PullJob(key)
            self._jobs[key] = job
            job.task = asyncio.get_running_loop().create_task(self._run(job, runner), name=f"pull {key}")
        job.followers += 1
        lines = job.follow()
        try:
            yield job, lines
        finally:
            await lines.aclose()  # type: ignore[attr-defined]
            job.followers -= 1
            if job.followers == 0 and not job.done and job.task is not None:
                log.info("pull of %s abandoned by its clients: stopping it (partial downloads are kept)", key)
                if self._jobs.get(key) is job:
                    del self._jobs[key]
                job.stopped.set()
                job.task.cancel()

    async def _run(self, job: PullJob, runner: Runner) -> None:
        try:
            await runner(job)
        except asyncio.CancelledError:
            job.failure = InternalError("the pull was cancelled")
            raise
        except SharedOllamaError as exc:
            job.failure = exc
            job.emit(progress.error(exc.message))
        except Exception as exc:
            log.exception("pull of %s failed", job.key)
            job.failure = InternalError(f"pull failed: {exc.__class__.__name__}: {exc}")
            job.emit(progress.error(job.failure.message))
        finally:
            if self._jobs.get(job.key) is job:
                del self._jobs[job.key]
            job.finish()

    @contextlib.asynccontextmanager
    async def blobs(self, digests: Iterable[str], waiting: Callable[[], None]) -> AsyncIterator[None]:
        """Hold the locks of ``digests`` (``waiting`` is called once if another pull holds one)."""
        async with contextlib.AsyncExitStack() as stack:
            told = False
            for digest in sorted(set(digests)):
                lock, users = self._blob_locks.get(digest, (asyncio.Lock(), 0))
                self._blob_locks[digest] = (lock, users + 1)
                stack.callback(self._release, digest)
                if lock.locked() and not told:
                    waiting()
                    told = True
                await stack.enter_async_context(lock)
            yield

    def _release(self, digest: str) -> None:
        lock, users = self._blob_locks[digest]
        if users <= 1:
            del self._blob_locks[digest]
        else:
            self._blob_locks[digest] = (lock, users - 1)
