"""The audit log: every admin action (who, what, when), in the analytics store's SQLite file (table ``audit``).

Admin actions are rare, so each entry is written before the action is answered (its own short connection in a
worker thread, beside the analytics writer's: the file is in WAL mode). An entry names the actor (the admin
tenant, or the signal that reloaded the configuration), the action, its target and a detail object — never a
key. Entries older than ``retention_days`` are deleted at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.observability.sqlite_db import open_database

JsonDict = dict[str, Any]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS audit (ts REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, "
    "target TEXT NOT NULL, detail TEXT NOT NULL, request_id TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts)",
)
MAX_LIMIT = 1000


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AuditLog:
    """Admin actions in SQLite; ``record`` returns once the entry is written."""

    def __init__(self, path: Path, *, retention_days: float = 365.0) -> None:
        if retention_days <= 0:
            raise ValueError("retention_days must be > 0")
        self.path = Path(path)
        self.retention_days = retention_days

    def _connect(self) -> sqlite3.Connection:
        return open_database(self.path, _SCHEMA)

    def _purge(self, now: float) -> None:
        with contextlib.closing(self._connect()) as conn:
            conn.execute("DELETE FROM audit WHERE ts < ?", (now - self.retention_days * 86400,))

    def _insert(self, row: tuple[Any, ...]) -> None:
        with contextlib.closing(self._connect()) as conn:
            conn.execute("INSERT INTO audit (ts, actor, action, target, detail, request_id) VALUES (?,?,?,?,?,?)", row)

    def _select(self, limit: int, since: float | None, actor: str | None, action: str | None) -> list[JsonDict]:
        where, params = ["1 = 1"], []
        for clause, value in (("ts >= ?", since), ("actor = ?", actor), ("action = ?", action)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = (
            "SELECT ts, actor, action, target, detail, request_id FROM audit "
            f"WHERE {' AND '.join(where)} ORDER BY ts DESC, rowid DESC LIMIT ?"
        )
        with contextlib.closing(self._connect()) as conn:
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [
            {
                "ts": ts,
                "time": _iso(ts),
                "actor": who,
                "action": what,
                "target": target,
                "detail": json.loads(detail),
                "request_id": request_id,
            }
            for ts, who, what, target, detail, request_id in rows
        ]

    async def start(self) -> None:
        """Create the table if needed and delete entries past the retention."""
        await asyncio.to_thread(self._purge, time.time())

    async def record(
        self, *, actor: str, action: str, target: str, detail: JsonDict | None = None, request_id: str = ""
    ) -> None:
        row = (time.time(), actor, action, target, json.dumps(detail or {}, sort_keys=True), request_id)
        await asyncio.to_thread(self._insert, row)

    async def query(
        self, *, limit: int = 100, since: float | None = None, actor: str | None = None, action: str | None = None
    ) -> list[JsonDict]:
        """The latest entries, newest first, optionally since an epoch time, of one actor or one action."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT} (got {limit})", param="limit")
        return await asyncio.to_thread(self._select, limit, since, actor, action)
