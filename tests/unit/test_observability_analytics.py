"""Request analytics in SQLite: batched off-loop writes, windows, groups, retention, restarts, back-pressure."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.observability import analytics, analytics_rows
from shared_ollama.service.observability.analytics import AnalyticsStore
from shared_ollama.service.observability.records import RequestRecord

REAL_CONNECT = sqlite3.connect
BASE = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
"""A fixed, hour-aligned instant: 2024-01-01T00:00:00Z."""


def rec(i: int = 0, ts: float = BASE, **kw: Any) -> RequestRecord:
    fields: dict[str, Any] = {"surface": "service", "route": "/api/chat", "tenant": "alpha", "model": "m1"}
    fields.update(kw)
    return RequestRecord(ts=ts, request_id=f"r{i}", **fields)


def db_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = REAL_CONNECT(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


class Hook:
    """Wraps every connection the store opens: records the threads that call sqlite and can stall writes."""

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.calls = 0
        self.gate: threading.Event | None = None
        self.fail_next = False
        self.entered = threading.Event()
        self.left_gate = threading.Event()
        self.committed = threading.Event()

    def connect(self, *args: Any, **kw: Any) -> sqlite3.Connection:
        hook = self

        class Conn(sqlite3.Connection):
            def execute(self, sql: str, *a: Any) -> sqlite3.Cursor:
                hook.threads.add(threading.get_ident())
                hook.calls += 1
                cursor = super().execute(sql, *a)
                if sql == "COMMIT":
                    hook.committed.set()
                return cursor

            def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
                hook.threads.add(threading.get_ident())
                hook.entered.set()
                if hook.fail_next:
                    hook.fail_next = False
                    raise sqlite3.OperationalError("disk I/O error")
                if hook.gate is not None:
                    released = hook.gate.wait(10)
                    hook.left_gate.set()
                    assert released, "test never released the stalled writer"
                return super().executemany(sql, rows)

        hook.threads.add(threading.get_ident())
        return REAL_CONNECT(*args, factory=Conn, **kw)


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Hook:
    h = Hook()
    monkeypatch.setattr(analytics.sqlite3, "connect", h.connect)
    return h


async def test_schema_one_column_per_record_field(open_store: Callable[..., Any]) -> None:
    store = await open_store()
    assert store.path.exists()  # parent directories were created
    columns = [row[1] for row in db_rows(store.path, "PRAGMA table_info(requests)")]
    assert sorted(columns) == sorted(f.name for f in dataclasses.fields(RequestRecord))
    indexes = {row[1] for row in db_rows(store.path, "PRAGMA index_list(requests)")}
    assert {"requests_ts", "requests_tenant_ts"} <= indexes
    assert db_rows(store.path, "PRAGMA journal_mode")[0][0] == "wal"


async def test_records_are_written_and_totals_aggregate(open_store: Callable[..., Any]) -> None:
    store = await open_store(flush_interval=3600)
    store.add(rec(1, BASE + 1, status=200, prompt_tokens=10, completion_tokens=5, latency=0.1, queue_wait=0.01,
                  cache="miss", engine=True, stream=True, ttft=0.05))  # fmt: skip
    store.add(rec(2, BASE + 2, status=200, prompt_tokens=3, latency=0.3, cache="hit"))
    store.add(rec(3, BASE + 3, status=503, code="queue_full", latency=0.2, queue_wait=0.05, cache="semantic-hit"))
    store.add(rec(4, BASE + 4, status=502, code="backend_error", latency=0.4, engine=True))
    assert store.stats()["pending"] == 4
    await store.flush()
    assert store.stats() == {"pending": 0, "written": 4, "dropped": 0, "path": str(store.path)}

    row = db_rows(store.path, "SELECT ttft, stream, engine, cache FROM requests WHERE request_id = 'r1'")[0]
    assert row == (0.05, 1, 1, "miss")
    assert db_rows(store.path, "SELECT ttft FROM requests WHERE request_id = 'r2'")[0] == (None,)

    result = await store.query(window="1h", tenant=None, group_by=None, now=BASE + 10)
    assert result["window"] == "1h" and result["group_by"] is None and result["tenant"] is None
    assert result["until"] == BASE + 10 and result["since"] == BASE + 10 - 3600
    assert result["groups"] == []
    assert result["totals"] == {
        "requests": 4,
        "errors": 2,
        "rejected": 1,  # r3: never reached the engine and failed; r4 failed on the engine
        "cache_hits": 2,
        "prompt_tokens": 13,
        "completion_tokens": 5,
        "avg_latency_ms": 250.0,
        "max_latency_ms": 400.0,
        "avg_queue_wait_ms": 15.0,
    }


async def test_group_by_tenant_model_surface_code(open_store: Callable[..., Any]) -> None:
    store = await open_store()
    for i in range(3):
        store.add(rec(i, BASE + i, tenant="alpha", model="m1", latency=0.1))
    for i in range(3, 8):
        store.add(rec(i, BASE + i, tenant="beta", model="m2", surface="openai", status=429, code="tenant_busy"))
    store.add(rec(8, BASE + 8, tenant="gamma", model="m1", latency=0.5))

    by_tenant = await store.query(window="1h", tenant=None, group_by="tenant", now=BASE + 60)
    assert [(g["key"], g["requests"], g["errors"]) for g in by_tenant["groups"]] == [
        ("beta", 5, 5),
        ("alpha", 3, 0),
        ("gamma", 1, 0),
    ]
    assert by_tenant["totals"]["requests"] == 9
    assert by_tenant["groups"][1]["avg_latency_ms"] == 100.0

    by_model = await store.query(window="1h", tenant=None, group_by="model", now=BASE + 60)
    assert [(g["key"], g["requests"]) for g in by_model["groups"]] == [("m2", 5), ("m1", 4)]
    assert by_model["groups"][1]["max_latency_ms"] == 500.0
    assert by_model["groups"][1]["avg_latency_ms"] == 200.0

    by_surface = await store.query(window="1h", tenant=None, group_by="surface", now=BASE + 60)
    assert [(g["key"], g["requests"]) for g in by_surface["groups"]] == [("openai", 5), ("service", 4)]
    by_code = await store.query(window="1h", tenant=None, group_by="code", now=BASE + 60)
    assert [(g["key"], g["rejected"]) for g in by_code["groups"]] == [("tenant_busy", 5), ("ok", 0)]


async def test_group_by_hour_and_minute_are_utc_buckets_ascending(open_store: Callable[..., Any]) -> None:
    store = await open_store()
    for i, offset in enumerate([2 * 3600 + 1, 10, 3599, 3600 + 5, 61]):
        store.add(rec(i, BASE + offset, prompt_tokens=i))
    by_hour = await store.query(window="24h", tenant=None, group_by="hour", now=BASE + 3 * 3600)
    assert [(g["key"], g["requests"], g["prompt_tokens"]) for g in by_hour["groups"]] == [
        ("2024-01-01T00:00:00Z", 3, 1 + 2 + 4),
        ("2024-01-01T01:00:00Z", 1, 3),
        ("2024-01-01T02:00:00Z", 1, 0),
    ]
    by_minute = await store.query(window="15m", tenant=None, group_by="minute", now=BASE + 300)
    assert [(g["key"], g["requests"]) for g in by_minute["groups"]] == [
        ("2024-01-01T00:00:00Z", 1),
        ("2024-01-01T00:01:00Z", 1),
    ]


async def test_tenant_filter_and_window_filter(open_store: Callable[..., Any]) -> None:
    store = await open_store()
    now = BASE + 40 * 86400
    ages = {"fresh": 60, "hours": 2 * 3600, "days": 3 * 86400, "weeks": 10 * 86400, "ancient": 35 * 86400}
    for i, (name, age) in enumerate(ages.items()):
        store.add(rec(i, now - age, tenant="alpha", model=name))
        store.add(rec(100 + i, now - age, tenant="beta", model=name))

    async def count(window: str, tenant: str | None = None) -> int:
        result = await store.query(window=window, tenant=tenant, group_by=None, now=now)
        return result["totals"]["requests"]

    assert [await count(w) for w in ("15m", "1h", "24h", "7d", "30d")] == [2, 2, 4, 6, 8]
    assert [await count(w, "alpha") for w in ("1h", "24h", "30d")] == [1, 2, 4]
    assert await count("30d", "nobody") == 0
    only_alpha = await store.query(window="30d", tenant="alpha", group_by="tenant", now=now)
    assert [g["key"] for g in only_alpha["groups"]] == ["alpha"]
    assert only_alpha["tenant"] == "alpha"
    empty = await store.query(window="1h", tenant="nobody", group_by="model", now=now)
    assert empty["groups"] == [] and empty["totals"]["avg_latency_ms"] == 0.0


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"window": "2h", "group_by": None}, "window"),
        ({"window": "", "group_by": None}, "window"),
        ({"window": "1h", "group_by": "route"}, "group_by"),
        ({"window": "1h", "group_by": "tenant; DROP TABLE requests"}, "group_by"),
    ],
)
async def test_bad_window_or_group_by_is_invalid_request(
    open_store: Callable[..., Any], kw: dict[str, Any], param: str
) -> None:
    store = await open_store()
    with pytest.raises(InvalidRequest) as info:
        await store.query(tenant=None, **kw)
    assert info.value.param == param
    if param == "window":
        assert "1h" in info.value.message and "30d" in info.value.message
    with pytest.raises(InvalidRequest):
        await store.recent_errors(limit=0)
    assert db_rows(store.path, "SELECT count(*) FROM requests") == [(0,)]


async def test_retention_deletes_old_rows_on_start(tmp_path: Path) -> None:
    path = tmp_path / "analytics.sqlite3"
    now = time.time()
    first = AnalyticsStore(path)
    await first.start()
    first.add(rec(1, now - 10 * 86400))
    first.add(rec(2, now - 2 * 86400))
    first.add(rec(3, now - 60))
    await first.close()
    assert db_rows(path, "SELECT count(*) FROM requests") == [(3,)]

    second = AnalyticsStore(path, retention_days=3)
    await second.start()
    try:
        assert db_rows(path, "SELECT request_id FROM requests ORDER BY ts") == [("r2",), ("r3",)]
        third_day = await second.query(window="30d", tenant=None, group_by=None)
        assert third_day["totals"]["requests"] == 2
    finally:
        await second.close()


async def test_graceful_restart_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "analytics.sqlite3"
    start = time.time() - 3600  # recent: reopening applies the default 30-day retention
    first = AnalyticsStore(path, flush_interval=3600, batch_size=1_000_000)
    await first.start()
    for i in range(1234):
        first.add(rec(i, start + i, tenant=f"t{i % 3}"))
    assert first.stats()["written"] == 0 and first.stats()["pending"] == 1234  # nothing written before close
    await first.close()
    assert first.stats()["written"] == 1234
    first.add(rec(9999))  # after close: dropped and counted, never raises
    assert first.stats()["dropped"] == 1

    second = AnalyticsStore(path)
    await second.start()
    try:
        result = await second.query(window="24h", tenant=None, group_by="tenant", now=start + 1234)
        assert result["totals"]["requests"] == 1234
        assert sorted((g["key"], g["requests"]) for g in result["groups"]) == [("t0", 412), ("t1", 411), ("t2", 411)]
    finally:
        await second.close()


async def test_sqlite_runs_only_on_the_writer_thread(hook: Hook, open_store: Callable[..., Any]) -> None:
    store = await open_store()
    store.add(rec(1, status=500))
    await store.flush()
    await store.query(window="1h", tenant=None, group_by="model", now=BASE + 1)
    assert len(await store.recent_errors()) == 1
    await store.close()
    assert hook.calls > 0
    assert threading.get_ident() not in hook.threads
    assert len(hook.threads) == 1  # one dedicated thread opened, wrote, queried and closed the connection


async def test_background_writer_flushes_by_size_and_by_interval(hook: Hook, open_store: Callable[..., Any]) -> None:
    by_size = await open_store(flush_interval=3600, batch_size=10)
    for i in range(9):
        by_size.add(rec(i))
    assert not await asyncio.to_thread(hook.committed.wait, 0.2)  # below batch_size, before the interval
    by_size.add(rec(9))
    assert await asyncio.to_thread(hook.committed.wait, 10)  # written without anyone calling flush()
    await by_size.close()
    assert by_size.stats()["written"] == 10

    hook.committed.clear()
    by_interval = await open_store(flush_interval=0.05, batch_size=1_000_000)
    by_interval.add(rec(1))
    assert await asyncio.to_thread(hook.committed.wait, 10)


async def test_adds_during_a_stalled_flush_are_not_lost(hook: Hook, open_store: Callable[..., Any]) -> None:
    store = await open_store(flush_interval=3600, batch_size=1_000_000)
    hook.gate = threading.Event()
    try:
        for i in range(100):
            store.add(rec(i))
        flushing = asyncio.create_task(store.flush())
        assert await asyncio.to_thread(hook.entered.wait, 10)  # the writer thread is now stuck in executemany
        calls = hook.calls
        for i in range(100, 1100):
            store.add(rec(i))  # synchronous: the loop never waits for the disk
        assert not hook.left_gate.is_set(), "every add returned while the writer was still stuck in executemany"
        assert hook.calls == calls, "the adds touched no database"
        assert store.stats()["pending"] == 1000
        assert not flushing.done()
    finally:
        hook.gate.set()
    await flushing
    await store.flush()
    assert store.stats() == {"pending": 0, "written": 1100, "dropped": 0, "path": str(store.path)}
    ids = {row[0] for row in db_rows(store.path, "SELECT request_id FROM requests")}
    assert ids == {f"r{i}" for i in range(1100)}


async def test_max_pending_drops_oldest_and_counts(hook: Hook, open_store: Callable[..., Any]) -> None:
    store = await open_store(flush_interval=3600, batch_size=1_000_000, max_pending=50)
    hook.gate = threading.Event()
    try:
        for i in range(10):
            store.add(rec(i))
        flushing = asyncio.create_task(store.flush())
        assert await asyncio.to_thread(hook.entered.wait, 10)
        for i in range(10, 210):
            store.add(rec(i))  # the disk is stuck: only the newest 50 are kept
        assert store.stats()["pending"] == 50
        assert store.stats()["dropped"] == 150
    finally:
        hook.gate.set()
    await flushing
    await store.flush()
    ids = {row[0] for row in db_rows(store.path, "SELECT request_id FROM requests")}
    assert ids == {f"r{i}" for i in range(10)} | {f"r{i}" for i in range(160, 210)}
    assert store.stats()["written"] == 60


async def test_failed_write_is_rolled_back_and_retried(hook: Hook, open_store: Callable[..., Any]) -> None:
    store = await open_store(flush_interval=3600, batch_size=1_000_000)
    for i in range(5):
        store.add(rec(i))
    hook.fail_next = True
    with pytest.raises(sqlite3.OperationalError):
        await store.flush()
    store.add(rec(5))
    assert store.stats()["pending"] == 6 and store.stats()["written"] == 0  # the batch was queued again
    await store.flush()
    assert store.stats()["written"] == 6
    assert sorted(db_rows(store.path, "SELECT request_id FROM requests")) == [(f"r{i}",) for i in range(6)]


async def test_malformed_record_is_skipped_not_poisoning_the_batch(open_store: Callable[..., Any]) -> None:
    store = await open_store()
    store.add(rec(1))
    store.add(rec(2, ts="not a time"))  # type: ignore[arg-type]
    store.add(rec(3))
    await store.flush()
    assert store.stats()["written"] == 2 and store.stats()["dropped"] == 1
    assert sorted(db_rows(store.path, "SELECT request_id FROM requests")) == [("r1",), ("r3",)]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"status": 200, "engine": True, "stream": True, "ttft": 0.05, "user": "ann", "cache": "miss"},
        {"status": "200", "prompt_tokens": 3.0, "queue_wait": 0, "stream": 1, "user": 7, "ttft": 1},  # odd types
        {"tenant": 5, "latency": True, "engine": 0},
    ],
)
def test_a_records_row_is_what_its_columns_converters_make(fields: dict[str, Any]) -> None:
    record = rec(1, **fields)
    converted = tuple(convert(getattr(record, name)) for name, _, convert in analytics_rows.COLUMNS)
    row = analytics_rows.record_row(record)
    assert row == converted
    assert [type(v) for v in row] == [bool if type(v) is bool else type(c) for v, c in zip(row, converted, strict=True)]


async def test_recent_errors_newest_first_with_tenant_filter(open_store: Callable[..., Any]) -> None:
    store = await open_store()
    store.add(rec(1, BASE + 1, tenant="alpha", status=500, code="internal_error"))
    store.add(rec(2, BASE + 2, tenant="beta", status=429, code="tenant_busy"))
    store.add(rec(3, BASE + 3, tenant="alpha", status=200))
    store.add(rec(4, BASE + 4, tenant="alpha", status=404, code="model_not_found", model="nope"))
    store.add(rec(5, BASE + 5, tenant="beta", status=503, code="queue_full"))

    errors = await store.recent_errors()
    assert [e["request_id"] for e in errors] == ["r5", "r4", "r2", "r1"]
    assert errors[1] == {
        "ts": BASE + 4,
        "request_id": "r4",
        "tenant": "alpha",
        "route": "/api/chat",
        "model": "nope",
        "status": 404,
        "code": "model_not_found",
        "host": "",
    }
    assert [e["request_id"] for e in await store.recent_errors(tenant="alpha")] == ["r4", "r1"]
    assert [e["request_id"] for e in await store.recent_errors(limit=2)] == ["r5", "r4"]
    assert await store.recent_errors(tenant="nobody") == []
