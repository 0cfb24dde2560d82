"""The audit log in a temporary analytics file: entries written, read newest first, filtered, bounded, purged."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.observability.audit import AuditLog


async def test_entries_newest_first_and_filtered(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "analytics.sqlite3")
    await log.start()
    await log.record(actor="ops", action="tenant.create", target="app", detail={"name": "app"}, request_id="r1")
    await log.record(actor="root", action="key.create", target="app/abc", detail={"id": "abc"}, request_id="r2")
    entries = await log.query()
    assert [(e["actor"], e["action"], e["target"], e["request_id"]) for e in entries] == [
        ("root", "key.create", "app/abc", "r2"),
        ("ops", "tenant.create", "app", "r1"),
    ]
    assert entries[1]["detail"] == {"name": "app"} and entries[1]["time"].endswith("Z")
    assert [e["actor"] for e in await log.query(actor="ops")] == ["ops"]
    assert [e["action"] for e in await log.query(action="key.create")] == ["key.create"]
    assert len(await log.query(limit=1)) == 1
    assert await log.query(since=time.time() + 60) == []
    for limit in (0, 1001):
        with pytest.raises(InvalidRequest):
            await log.query(limit=limit)


async def test_old_entries_are_deleted_at_start(tmp_path: Path) -> None:
    path = tmp_path / "analytics.sqlite3"
    log = AuditLog(path, retention_days=1)
    await log.start()
    await log.record(actor="ops", action="tenant.delete", target="old")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE audit SET ts = ts - 2 * 86400")
    await log.record(actor="ops", action="tenant.delete", target="new")
    await AuditLog(path, retention_days=1).start()
    assert [e["target"] for e in await log.query()] == ["new"]
