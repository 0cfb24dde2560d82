"""The engine host in the analytics store: its column, a database from before it (migrated on open),
``group_by=host`` in analytics and usage, the host of recent errors, and retention in short transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared_ollama.service.observability import analytics, analytics_rows, sqlite_db
from shared_ollama.service.observability.analytics import AnalyticsStore
from shared_ollama.service.observability.records import RequestRecord
from shared_ollama.service.observability.usage import UsageQuery, usage

BASE = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
"""2024-01-01T00:00:00Z."""
KEEP_DAYS = 100 * 365
"""A retention that keeps the 2024 rows."""


def rec(i: int, host: str, **kw: Any) -> RequestRecord:
    fields: dict[str, Any] = {"surface": "ollama", "route": "/api/chat", "tenant": "t", "model": "m", "status": 200}
    fields.update({"engine": bool(host), "prompt_tokens": 2, "completion_tokens": 3, **kw})
    return RequestRecord(ts=BASE + i, request_id=f"r{i}", host=host, **fields)


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_each_request_is_stored_with_its_host_and_grouped_by_it(open_store: Callable[..., Any]) -> None:
    store = await open_store(retention_days=KEEP_DAYS)
    for i, host in enumerate(["gpu-1", "gpu-2", "gpu-1", "", "gpu-1"]):
        store.add(rec(i, host))
    store.add(rec(9, "gpu-2", status=502, code="backend_error"))

    result = await store.query(window="1h", tenant=None, group_by="host", now=BASE + 60)
    assert [(g["key"], g["requests"], g["errors"]) for g in result["groups"]] == [
        ("gpu-1", 3, 0),
        ("gpu-2", 2, 1),
        ("", 1, 0),
    ]
    assert rows(store.path, "SELECT host FROM requests ORDER BY ts") == [
        ("gpu-1",),
        ("gpu-2",),
        ("gpu-1",),
        ("",),
        ("gpu-1",),
        ("gpu-2",),
    ]
    (error,) = await store.recent_errors()
    assert error["host"] == "gpu-2" and error["code"] == "backend_error"

    per_host = await usage(
        store, UsageQuery.parse(window="1h", group_by="host", bucket=None, tenant=None), now=BASE + 60
    )
    assert [(r["host"], r["requests"], r["total_tokens"]) for r in per_host["rows"]] == [
        ("gpu-1", 3, 15),
        ("gpu-2", 1, 5),  # the 502 is no usage; nor is the request that reached no engine
    ]
    both = UsageQuery.parse(window="1h", group_by="model,host", bucket=None, tenant=None)
    assert [(r["model"], r["host"]) for r in (await usage(store, both, now=BASE + 60))["rows"]] == [
        ("m", "gpu-1"),
        ("m", "gpu-2"),
    ]


async def test_a_database_from_before_the_host_column_gets_it_on_open(
    tmp_path: Path, open_store: Callable[..., Any]
) -> None:
    path = tmp_path / "old.sqlite3"
    old = [(name, kind) for name, kind, _ in analytics_rows.COLUMNS if name != "host"]
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE requests ({})".format(", ".join(f"{n} {k}" for n, k in old)))
    values = {name: 0 for name, _ in old} | {"ts": BASE, "request_id": "old", "tenant": "t", "model": "m"}
    values |= {"surface": "ollama", "route": "/api/chat", "code": "ok", "cache": "none", "user": None, "ttft": None}
    conn.execute(
        f"INSERT INTO requests ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})", tuple(values.values())
    )
    conn.commit()
    conn.close()

    store = await open_store(path, retention_days=KEEP_DAYS)
    store.add(rec(1, "gpu-1"))
    result = await store.query(window="1h", tenant=None, group_by="host", now=BASE + 60)
    assert [(g["key"], g["requests"]) for g in result["groups"]] == [("", 1), ("gpu-1", 1)], "old rows: no host"
    assert "host" in [row[1] for row in rows(path, "PRAGMA table_info(requests)")]


async def test_retention_deletes_in_short_transactions_until_done(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "analytics.sqlite3"
    first = AnalyticsStore(path)
    await first.start()
    for i in range(7):
        first.add(rec(i, "gpu-1"))  # 2024: far past the 30-day retention
    first.add(RequestRecord(ts=datetime.now(UTC).timestamp(), request_id="new", surface="ollama", route="/api/chat"))
    await first.close()
    monkeypatch.setattr(analytics, "PURGE_CHUNK", 2)
    statements: list[str] = []
    real = sqlite3.connect

    def connect(*args: Any, **kw: Any) -> sqlite3.Connection:
        conn = real(*args, **kw)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    second = AnalyticsStore(path)
    await second.start()
    await second.close()
    assert rows(path, "SELECT request_id FROM requests") == [("new",)]
    assert sum(s.startswith("DELETE FROM requests") for s in statements) == 4, "2 + 2 + 2 + 1 rows"


async def test_a_file_another_process_holds_locked_at_start_up_delays_retention_not_the_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "analytics.sqlite3"
    first = AnalyticsStore(path)
    await first.start()
    await first.close()
    monkeypatch.setattr(sqlite_db, "BUSY_TIMEOUT", 0.05)
    other = sqlite3.connect(path, isolation_level=None)  # another replica in the middle of a long write
    other.execute("BEGIN IMMEDIATE")
    try:
        store = AnalyticsStore(path)
        await store.start()  # its retention pass could not get the file: skipped, not fatal
    finally:
        other.execute("ROLLBACK")
        other.close()
    try:
        store.add(rec(1, "gpu-1"))
        result = await store.query(window="1h", tenant=None, group_by="host", now=BASE + 60)
        assert [(g["key"], g["requests"]) for g in result["groups"]] == [("gpu-1", 1)]
    finally:
        await store.close()
