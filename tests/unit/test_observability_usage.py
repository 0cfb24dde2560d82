"""Usage from the analytics store: what counts, groups (tenant, model, user, combined), hour and day buckets, one
tenant's view, parameter errors, and a database from before the usage columns (migrated on open)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.observability.analytics import AnalyticsStore
from shared_ollama.service.observability.records import RequestRecord
from shared_ollama.service.observability.usage import UsageQuery, usage

BASE = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
"""2024-01-01T00:00:00Z."""
NOW = BASE + 2 * 86400


def rec(ts: float, tenant: str, model: str = "m1", user: str | None = None, **kw: Any) -> RequestRecord:
    fields: dict[str, Any] = {"route": "/api/chat", "engine": True, "prompt_tokens": 10, "completion_tokens": 5}
    fields.update({"engine_seconds": 0.5, **kw})
    return RequestRecord(ts=ts, request_id="r", surface="ollama", tenant=tenant, model=model, user=user, **fields)


def query(window: str = "7d", group_by: str = "tenant", bucket: str | None = None, tenant: str | None = None) -> Any:
    return UsageQuery.parse(window=window, group_by=group_by, bucket=bucket, tenant=tenant)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AnalyticsStore]:
    opened = AnalyticsStore(tmp_path / "analytics.sqlite3", retention_days=100 * 365)
    await opened.start()
    for record in (
        rec(NOW - 3600, "a", "m1", "ann"),
        rec(NOW - 3500, "a", "m2", "bob", prompt_tokens=100, completion_tokens=50, engine_seconds=2.0),
        rec(NOW - 86400 - 60, "a", "m1"),
        rec(NOW - 60, "b", "m1", "ann", prompt_tokens=1, completion_tokens=1, engine_seconds=0.25),
        rec(NOW - 50, "b", "m1", engine=False, cache="hit", prompt_tokens=0, completion_tokens=0, engine_seconds=0),
        # not usage: refused before the engine, a batch's envelope, an engine error, older than every window
        rec(NOW - 40, "b", engine=False, status=429, code="rate_limited", prompt_tokens=0, completion_tokens=0),
        rec(NOW - 30, "b", engine=False, route="/api/v1/batch/chat", prompt_tokens=0, completion_tokens=0),
        rec(NOW - 20, "b", "nope", status=404, code="model_not_found", prompt_tokens=0, completion_tokens=0),
        rec(NOW - 40 * 86400, "a"),
    ):
        opened.add(record)
    yield opened
    await opened.close()


async def test_totals_and_rows_per_tenant(store: AnalyticsStore) -> None:
    result = await usage(store, query(), now=NOW)
    assert result["totals"] == {
        "requests": 5,
        "prompt_tokens": 121,
        "completion_tokens": 61,
        "total_tokens": 182,
        "engine_seconds": 3.25,
    }
    assert result["rows"] == [
        {
            "tenant": "a",
            "requests": 3,
            "prompt_tokens": 120,
            "completion_tokens": 60,
            "total_tokens": 180,
            "engine_seconds": 3.0,
        },
        {
            "tenant": "b",
            "requests": 2,
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "total_tokens": 2,
            "engine_seconds": 0.25,
        },
    ]
    assert result["group_by"] == ["tenant"] and result["bucket"] is None and result["window"] == "7d"


async def test_a_window_and_one_tenants_view(store: AnalyticsStore) -> None:
    day = await usage(store, query("24h", tenant="a"), now=NOW)
    assert day["tenant"] == "a"
    assert day["totals"]["requests"] == 2, "the request of the day before is outside the window"
    assert [r["tenant"] for r in day["rows"]] == ["a"]


async def test_rows_per_model_per_user_and_combined(store: AnalyticsStore) -> None:
    models = await usage(store, query(group_by="model"), now=NOW)
    assert [(r["model"], r["requests"], r["total_tokens"]) for r in models["rows"]] == [("m2", 1, 150), ("m1", 4, 32)]
    users = await usage(store, query(group_by="user"), now=NOW)
    assert {r["user"]: r["requests"] for r in users["rows"]} == {"bob": 1, "ann": 2, None: 2}
    both = await usage(store, query(group_by="tenant, model"), now=NOW)
    assert [(r["tenant"], r["model"], r["requests"]) for r in both["rows"]] == [
        ("a", "m2", 1),
        ("a", "m1", 2),
        ("b", "m1", 2),
    ]


async def test_hour_and_day_buckets(store: AnalyticsStore) -> None:
    hours = await usage(store, query(bucket="hour"), now=NOW)
    assert [(r["bucket"], r["tenant"], r["requests"]) for r in hours["rows"]] == [
        ("2024-01-01T23:00:00Z", "a", 1),
        ("2024-01-02T23:00:00Z", "a", 2),
        ("2024-01-02T23:00:00Z", "b", 2),
    ]
    days = await usage(store, query(bucket="day", group_by="model"), now=NOW)
    assert [(r["bucket"], r["model"], r["requests"]) for r in days["rows"]] == [
        ("2024-01-01T00:00:00Z", "m1", 1),
        ("2024-01-02T00:00:00Z", "m2", 1),
        ("2024-01-02T00:00:00Z", "m1", 3),
    ]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"window": "2w"}, "window"),
        ({"group_by": "route"}, "group_by"),
        ({"group_by": ""}, "group_by"),
        ({"group_by": "tenant,tenant"}, "group_by"),
        ({"bucket": "minute"}, "bucket"),
    ],
)
def test_bad_parameters_are_400_naming_them(params: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        query(**params)
    assert refused.value.param == param


async def test_a_database_from_before_the_usage_columns_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE requests (ts REAL NOT NULL, request_id TEXT NOT NULL, tenant TEXT NOT NULL, "
        "surface TEXT NOT NULL, route TEXT NOT NULL, model TEXT NOT NULL, status INTEGER NOT NULL, code TEXT NOT NULL, "
        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, queue_wait REAL NOT NULL, ttft REAL, "
        "latency REAL NOT NULL, eval_seconds REAL NOT NULL, load_seconds REAL NOT NULL, cache TEXT NOT NULL, "
        "stream INTEGER NOT NULL, engine INTEGER NOT NULL)"
    )
    old.execute(
        "INSERT INTO requests VALUES (?, 'old', 'a', 'ollama', '/api/chat', 'm1', 200, 'ok', 7, 3, 0, NULL, 1, 1, 0, "
        "'none', 0, 1)",
        (NOW - 60,),
    )
    old.commit()
    old.close()
    store = AnalyticsStore(path, retention_days=100 * 365)  # the fixed dates are long past
    await store.start()
    try:
        store.add(rec(NOW - 30, "a", user="ann", engine_seconds=1.5))
        result = await usage(store, query(group_by="user"), now=NOW)
    finally:
        await store.close()
    assert result["totals"]["requests"] == 2
    assert {r["user"]: (r["total_tokens"], r["engine_seconds"]) for r in result["rows"]} == {
        "ann": (15, 1.5),
        None: (10, 0.0),
    }
