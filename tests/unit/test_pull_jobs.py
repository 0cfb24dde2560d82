"""One pull per name shared by its clients, cancelled when they have all gone; blob locks between pulls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared_ollama.engine.pull.jobs import PullJob, PullJobs
from shared_ollama.errors import ModelNotFound

JsonDict = dict[str, Any]


class Script:
    """A runner that emits lines when told to, and records how often it ran and whether it was cancelled."""

    def __init__(self) -> None:
        self.runs = 0
        self.cancelled = 0
        self.go = asyncio.Event()

    async def __call__(self, job: PullJob) -> None:
        self.runs += 1
        job.emit({"status": "pulling manifest"})
        try:
            await self.go.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        job.emit({"status": "success"})


async def take(lines: AsyncIterator[JsonDict], count: int) -> list[JsonDict]:
    return [await anext(lines) for _ in range(count)]


async def test_clients_of_one_name_share_one_run_and_a_late_one_sees_every_line() -> None:
    jobs, script = PullJobs(), Script()
    async with jobs.follow("m:latest", script) as (_, first):
        assert await take(first, 1) == [{"status": "pulling manifest"}]
        async with jobs.follow("m:latest", script) as (_, second):
            assert await take(second, 1) == [{"status": "pulling manifest"}]
            script.go.set()
            assert [line async for line in first] == [{"status": "success"}]
            assert [line async for line in second] == [{"status": "success"}]
    assert script.runs == 1 and jobs.running() == []


async def test_the_last_client_leaving_cancels_the_pull_and_a_new_pull_starts_anew() -> None:
    jobs, script = PullJobs(), Script()
    async with jobs.follow("m:latest", script) as (job, lines):
        await take(lines, 1)
        async with jobs.follow("m:latest", script) as (_, other):
            await take(other, 1)
        assert job.task is not None and not job.task.done()  # one client is still there
        assert not job.stopped.is_set()
    assert job.stopped.is_set()  # at once: downloads in worker threads stop at their next write
    assert job.task is not None
    with pytest.raises(asyncio.CancelledError):
        await job.task
    assert script.cancelled == 1 and jobs.running() == []
    script.go.set()
    async with jobs.follow("m:latest", script) as (_, lines):
        assert [line["status"] async for line in lines] == ["pulling manifest", "success"]
    assert script.runs == 2


async def test_a_failure_is_an_error_line_and_the_jobs_error() -> None:
    async def failing(job: PullJob) -> None:
        job.emit({"status": "pulling manifest"})
        raise ModelNotFound("pull model manifest: file does not exist")

    jobs = PullJobs()
    async with jobs.follow("m:latest", failing) as (job, lines):
        assert [line async for line in lines] == [
            {"status": "pulling manifest"},
            {"error": "pull model manifest: file does not exist"},
        ]
    assert isinstance(job.failure, ModelNotFound)


async def test_an_unexpected_exception_is_reported_not_raised() -> None:
    async def broken(job: PullJob) -> None:
        raise RuntimeError("disk on fire")

    jobs = PullJobs()
    async with jobs.follow("m:latest", broken) as (job, lines):
        assert [line async for line in lines] == [{"error": "pull failed: RuntimeError: disk on fire"}]
    assert job.failure is not None and job.failure.status == 500


async def test_two_pulls_of_one_blob_take_turns_and_the_second_is_told() -> None:
    jobs = PullJobs()
    order: list[str] = []
    first_in, second_waits, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with jobs.blobs(["sha256:b", "sha256:a"], lambda: order.append("first told")):
            order.append("first in")
            first_in.set()
            await release.wait()
            order.append("first out")

    async def second() -> None:
        await first_in.wait()
        async with jobs.blobs(["sha256:a"], second_waits.set):
            order.append("second in")

    both = asyncio.gather(first(), second())
    await second_waits.wait()  # the second pull found the blob taken
    release.set()
    await both
    assert order == ["first in", "first out", "second in"]
    assert jobs._blob_locks == {}  # forgotten once nobody holds or waits for them
