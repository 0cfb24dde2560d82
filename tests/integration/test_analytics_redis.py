"""Analytics shared by replicas on different machines, through a real Redis stream (``analytics_share``).

Stores on files of their own stand for replicas on different machines; two stores on one file for two replicas on
one machine. Each test names a stream of its own. Every wait is bounded; every store is closed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared_ollama.service.observability.analytics import AnalyticsStore
from shared_ollama.service.observability.analytics_share import AnalyticsShare
from shared_ollama.service.observability.analytics_share_db import store_identity
from shared_ollama.service.observability.records import RequestRecord
from tests.support.processes import free_port

pytestmark = pytest.mark.integration


def _record(name: str, tenant: str) -> RequestRecord:
    return RequestRecord(
        ts=time.time(), request_id=name, tenant=tenant, surface="ollama", route="/api/chat", status=200, host="h"
    )


def _rows(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT request_id, tenant FROM requests").fetchall())
    finally:
        conn.close()


async def _until(check: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        await asyncio.sleep(0.05)  # polling interval, not synchronisation


class Replicas:
    """Analytics stores sharing one stream (a name of the test's own); all closed at the end."""

    def __init__(self, redis_url: str, stack: AsyncExitStack) -> None:
        self.url = redis_url
        self.stream = f"test-analytics:{uuid.uuid4().hex}"
        self.stack = stack

    async def store(self, path: Path, url: str | None = None, flush_interval: float = 0.05) -> AnalyticsStore:
        share = AnalyticsShare(url or self.url, stream=self.stream, max_records=10_000, block_ms=100, retry=0.1)
        store = AnalyticsStore(path, flush_interval=flush_interval, share=share)
        await store.start()
        self.stack.push_async_callback(store.close)
        return store

    async def last_id(self) -> str:
        client = Redis.from_url(self.url)
        try:
            newest = await client.xrevrange(self.stream, count=1)
        finally:
            await client.aclose()
        return newest[0][0].decode() if newest else "0-0"

    async def caught_up(self, *stores: AnalyticsStore) -> None:
        """Every store has published all it wrote and read the stream to its end."""
        for store in stores:
            assert store.share is not None
            await store.flush()
            for _ in range(400):  # bounded: 20 s
                if not await store.share.backlog():
                    break
                await asyncio.sleep(0.05)  # polling interval, not synchronisation
            assert not await store.share.backlog(), "everything written was published"
        last = await self.last_id()
        for store in stores:
            await _until(lambda s=store: s.share.position == last, f"a follower at the stream end {last}")  # type: ignore[union-attr]


@asynccontextmanager
async def replicas(redis_url: str) -> AsyncIterator[Replicas]:
    async with AsyncExitStack() as stack:
        yield Replicas(redis_url, stack)


async def test_each_replica_counts_the_others_requests(redis_url: str, tmp_path: Path) -> None:
    async with replicas(redis_url) as group:
        one = await group.store(tmp_path / "one" / "analytics.sqlite3")
        two = await group.store(tmp_path / "two" / "analytics.sqlite3")
        for i in range(30):
            one.add(_record(f"one-{i}", "alpha"))
        for i in range(20):
            two.add(_record(f"two-{i}", "beta"))
        await group.caught_up(one, two)
        for store in (one, two):
            result = await store.query(window="1h", tenant=None, group_by="tenant")
            assert result["totals"]["requests"] == 50, result
            assert {g["key"]: g["requests"] for g in result["groups"]} == {"alpha": 30, "beta": 20}
        assert _rows(one.path) == _rows(two.path)  # the same rows, each once
        assert one.stats()["shared"]["imported"] == 20 and two.stats()["shared"]["imported"] == 30


async def test_replicas_on_one_file_import_each_entry_once_and_never_their_own(redis_url: str, tmp_path: Path) -> None:
    shared = tmp_path / "machine-a" / "analytics.sqlite3"
    async with replicas(redis_url) as group:
        first = await group.store(shared)
        second = await group.store(shared)  # a second replica on the same machine and file
        other = await group.store(tmp_path / "machine-b" / "analytics.sqlite3")
        assert first.share is not None and second.share is not None and other.share is not None
        assert first.share.store_id == second.share.store_id != other.share.store_id
        for i in range(40):
            other.add(_record(f"b-{i}", "b"))
        for i in range(10):
            first.add(_record(f"a1-{i}", "a"))
            second.add(_record(f"a2-{i}", "a"))
        await group.caught_up(first, second, other)
        expected = sorted(
            [(f"b-{i}", "b") for i in range(40)] + [(f"a{k}-{i}", "a") for k in (1, 2) for i in range(10)]
        )
        assert _rows(shared) == expected  # both followers read machine b's 40 rows: the file has each once
        assert _rows(other.path) == expected
        assert first.share.stats()["imported"] + second.share.stats()["imported"] == 40
        client = Redis.from_url(redis_url)
        try:
            assert await client.xlen(group.stream) == 60  # one replica on the file published its queue: each row once
        finally:
            await client.aclose()


async def test_a_replica_started_again_catches_up_after_what_it_imported(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "later" / "analytics.sqlite3"
    async with replicas(redis_url) as group:
        writer = await group.store(tmp_path / "writer" / "analytics.sqlite3")
        for i in range(15):
            writer.add(_record(f"before-{i}", "t"))
        reader = await group.store(path)
        await group.caught_up(writer, reader)
        await reader.close()
        conn = sqlite3.connect(path)
        try:
            assert store_identity(conn, stream=group.stream)[1] == await group.last_id()  # where it resumes
        finally:
            conn.close()
        for i in range(25):  # while the reader is down
            writer.add(_record(f"during-{i}", "t"))
        await writer.flush()
        again = await group.store(path)
        await group.caught_up(writer, again)
        assert len(_rows(path)) == 40 and len(set(_rows(path))) == 40
        assert again.stats()["shared"]["imported"] == 25
        assert again.stats()["shared"]["read"] == 25  # after what it had read, not the stream again from its start


async def test_malformed_entries_are_counted_and_skipped(redis_url: str, tmp_path: Path) -> None:
    async with replicas(redis_url) as group:
        reader = await group.store(tmp_path / "reader" / "analytics.sqlite3")
        client = Redis.from_url(redis_url)
        try:
            bad = [
                b"not json",
                b'{"tenant": "no time or id"}',
                b'{"ts": "soon", "request_id": "x"}',
                b'{"ts": "nan", "request_id": "x"}',  # NaN: SQLite would store NULL and refuse the whole batch
                b'{"ts": 1e9, "request_id": "x", "status": 1e30}',  # beyond SQLite's integers
                b"[1]",
                b'"x"',
            ]
            for number, row in enumerate(bad):
                await client.xadd(group.stream, {"s": "elsewhere", "o": number, "r": row})
            await client.xadd(group.stream, {"s": "elsewhere", "r": b'{"ts": 1e9, "request_id": "no-number"}'})
            await client.xadd(group.stream, {"s": "elsewhere", "o": "1" * 30, "r": b'{"ts": 1e9, "request_id": "big"}'})
            fine = b'{"ts": 1e9, "request_id": "fine", "tenant": "t"}'
            await client.xadd(group.stream, {"s": "elsewhere", "o": 99, "r": fine})
            await client.xadd(group.stream, {"s": "elsewhere", "o": 99, "r": fine})  # sent again: imported once
        finally:
            await client.aclose()
        await group.caught_up(reader)
        assert reader.share is not None and reader.share.stats()["malformed"] == 9
        assert [row[0] for row in _rows(reader.path)] == ["fine"]


async def test_rows_written_while_redis_is_unreachable_go_out_after_a_restart(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "alone" / "analytics.sqlite3"
    async with replicas(redis_url) as group:
        other = await group.store(tmp_path / "other" / "analytics.sqlite3")
        store = await group.store(path, url=f"redis://127.0.0.1:{free_port()}/0")
        for i in range(12):
            store.add(_record(f"r-{i}", "t"))
        await store.flush()  # written here, whatever Redis does: requests never wait for it
        result = await store.query(window="1h", tenant=None, group_by=None)
        assert result["totals"]["requests"] == 12
        assert store.share is not None
        assert await store.share.backlog() == 12 and store.share.stats()["published"] == 0
        await store.close()  # a stop with Redis down: the rows stay queued in the file
        again = await group.store(path)  # started again, Redis reachable
        await group.caught_up(again, other)
        assert _rows(other.path) == sorted((f"r-{i}", "t") for i in range(12))


async def test_a_stop_publishes_what_it_writes_last(redis_url: str, tmp_path: Path) -> None:
    async with replicas(redis_url) as group:
        other = await group.store(tmp_path / "other" / "analytics.sqlite3")
        leaving = await group.store(tmp_path / "leaving" / "analytics.sqlite3", flush_interval=3600)
        for i in range(9):
            leaving.add(_record(f"last-{i}", "t"))  # written only by the close: its final flush, then the drain
        await leaving.close()
        await _until(lambda: len(_rows(other.path)) == 9, "the rows a stopping replica wrote last, at the other")
        assert _rows(other.path) == sorted((f"last-{i}", "t") for i in range(9))
