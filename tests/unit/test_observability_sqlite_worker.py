"""The SQLite worker: one connection used by one thread of its own, in call order; a clear error before start and
after close; a failed open leaves nothing running."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from shared_ollama.service.observability.sqlite_db import open_database
from shared_ollama.service.observability.sqlite_worker import SqliteWorker, rows_as_dicts

SCHEMA = ("CREATE TABLE IF NOT EXISTS t (n INTEGER NOT NULL)",)


def thread_of(conn: sqlite3.Connection) -> int:
    return threading.get_ident()


async def test_every_call_runs_in_one_thread_of_its_own_with_the_connection(tmp_path: Path) -> None:
    worker = SqliteWorker(tmp_path / "a" / "w.sqlite3", SCHEMA, wal=True, name="test store")
    await worker.start()
    try:
        assert worker.running
        threads = {await worker.run(thread_of) for _ in range(5)}
        assert len(threads) == 1 and threading.get_ident() not in threads
        await worker.run(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
        assert await worker.run(lambda conn: conn.execute("SELECT n FROM t").fetchall()) == [(1,)]
        assert await worker.run(lambda conn: conn.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
        assert (await worker.run(lambda conn: threading.current_thread().name)).startswith("test-store")
    finally:
        await worker.close()


async def test_calls_run_in_the_order_they_were_made(tmp_path: Path) -> None:
    worker = SqliteWorker(tmp_path / "w.sqlite3", SCHEMA)
    await worker.start()
    try:
        await asyncio.gather(
            *(worker.run(lambda conn, i=i: conn.execute("INSERT INTO t VALUES (?)", (i,))) for i in range(50))
        )
        order = await worker.run(lambda conn: [n for (n,) in conn.execute("SELECT n FROM t ORDER BY rowid")])
        assert order == list(range(50))
    finally:
        await worker.close()


async def test_a_failing_call_raises_to_its_caller_and_the_worker_goes_on(tmp_path: Path) -> None:
    worker = SqliteWorker(tmp_path / "w.sqlite3", SCHEMA)
    await worker.start()
    try:
        with pytest.raises(sqlite3.OperationalError):
            await worker.run(lambda conn: conn.execute("SELECT nope FROM t"))
        assert await worker.run(lambda conn: conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 0
    finally:
        await worker.close()


async def test_use_before_start_and_after_close_is_a_clear_error(tmp_path: Path) -> None:
    worker = SqliteWorker(tmp_path / "w.sqlite3", SCHEMA, name="agent store")
    with pytest.raises(RuntimeError, match="agent store is not started"):
        await worker.run(thread_of)
    await worker.close()  # closing a worker never started is harmless
    await worker.start()
    with pytest.raises(RuntimeError, match="agent store is already started"):
        await worker.start()
    await worker.close()
    await worker.close()  # and closing twice too
    assert not worker.running
    with pytest.raises(RuntimeError, match="agent store is closed"):
        await worker.run(thread_of)
    await worker.start()  # a closed worker can be started again, on the same file
    try:
        assert isinstance(await worker.run(thread_of), int)
    finally:
        await worker.close()


class Recorded:
    """A connection that records the thread that closed it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.closed_in: int | None = None

    def execute(self, sql: str, *params: Any) -> sqlite3.Cursor:
        return self.conn.execute(sql, *params)

    def close(self) -> None:
        self.closed_in = threading.get_ident()
        self.conn.close()


async def test_close_waits_for_the_calls_already_made_and_closes_the_connection_in_its_thread(tmp_path: Path) -> None:
    opened: list[Recorded] = []

    def connect(path: Path, schema: tuple[str, ...], **options: Any) -> Recorded:
        opened.append(Recorded(open_database(path, schema, **options)))
        return opened[-1]

    worker = SqliteWorker(tmp_path / "w.sqlite3", SCHEMA, connect=connect)
    await worker.start()
    worker_thread = await worker.run(lambda conn: threading.get_ident())
    entered, gate = threading.Event(), threading.Event()

    def slow_insert(conn: Recorded) -> None:
        entered.set()
        assert gate.wait(10), "the test never released the call"
        conn.execute("INSERT INTO t VALUES (7)")

    pending = asyncio.ensure_future(worker.run(slow_insert))
    try:
        assert await asyncio.to_thread(entered.wait, 10)  # the worker's thread is inside slow_insert
        closing = asyncio.ensure_future(worker.close())
        await asyncio.sleep(0)  # one loop step: close() has begun and queued its call behind slow_insert
        assert not worker.running and not closing.done()
        assert opened[0].closed_in is None
        with pytest.raises(RuntimeError, match="is closed"):
            await worker.run(thread_of)
    finally:
        gate.set()
    await pending
    await closing
    assert opened[0].closed_in == worker_thread
    with sqlite3.connect(worker.path) as check:
        assert check.execute("SELECT n FROM t").fetchall() == [(7,)]


async def test_migrate_runs_after_the_schema_and_a_custom_connect_gets_the_options(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    def migrate(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (42)")

    def connect(path: Path, schema: tuple[str, ...], **options: Any) -> sqlite3.Connection:
        calls.append({"path": path, "schema": schema, **options})
        return open_database(path, schema, **options)

    worker = SqliteWorker(tmp_path / "w.sqlite3", SCHEMA, wal=True, migrate=migrate, connect=connect)
    await worker.start()
    try:
        assert calls == [{"path": tmp_path / "w.sqlite3", "schema": SCHEMA, "wal": True, "migrate": migrate}]
        assert await worker.run(lambda conn: conn.execute("SELECT n FROM t").fetchall()) == [(42,)]
    finally:
        await worker.close()


async def test_a_failed_open_raises_and_leaves_nothing_running(tmp_path: Path) -> None:
    worker = SqliteWorker(tmp_path / "w.sqlite3", ("CREATE TABLE broken (",), name="broken store")
    with pytest.raises(sqlite3.OperationalError):
        await worker.start()
    assert not worker.running
    with pytest.raises(RuntimeError, match="broken store is not started"):
        await worker.run(thread_of)
    await worker.close()


async def test_rows_as_dicts_names_the_columns(tmp_path: Path) -> None:
    worker = SqliteWorker(tmp_path / "w.sqlite3", SCHEMA)
    await worker.start()
    try:
        await worker.run(lambda conn: conn.execute("INSERT INTO t VALUES (3)"))
        assert await worker.run(lambda conn: rows_as_dicts(conn.execute("SELECT n, n * 2 AS twice FROM t"))) == [
            {"n": 3, "twice": 6}
        ]
    finally:
        await worker.close()
