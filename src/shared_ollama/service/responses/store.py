"""Stored responses in SQLite: one row per (tenant, response id), expiring ``ttl_seconds`` after creation.

Every sqlite call (and the JSON encoding of a row) runs in the store's ``SqliteWorker`` thread, which also owns the
connection; the event loop only awaits it. A tenant sees its own rows only: the key is (tenant, id), so another
tenant's id is simply not there. Expired rows are never returned, and are deleted at start-up and then at most once per
``purge_interval`` seconds, by the next write.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from shared_ollama.service.observability.sqlite_worker import SqliteWorker

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses (tenant TEXT NOT NULL, id TEXT NOT NULL, created_at REAL NOT NULL, "
    "expires_at REAL NOT NULL, response BLOB NOT NULL, input_items BLOB NOT NULL, conversation BLOB NOT NULL, "
    "PRIMARY KEY (tenant, id))",
    "CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires_at)",
)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: JsonDict
    """The response object as it was answered (``id``, ``status``, ``output``, ...)."""
    input_items: list[JsonDict]
    """The request's own input items, each with its id (``GET /v1/responses/{id}/input_items``)."""
    conversation: list[JsonDict]
    """The native messages of the whole conversation through this response (instructions aside): what a
    request naming it as ``previous_response_id`` continues."""

    @property
    def id(self) -> str:
        return str(self.response["id"])


class ResponseStore:
    """Responses kept per tenant for ``ttl_seconds``; ``start`` before use, ``close`` at shutdown."""

    def __init__(
        self,
        path: Path,
        *,
        ttl_seconds: float,
        purge_interval: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_seconds <= 0 or purge_interval <= 0:
            raise ValueError("ttl_seconds and purge_interval must be > 0")
        self.path = Path(path)
        self.ttl_seconds = ttl_seconds
        self.purge_interval = purge_interval
        self._clock = clock
        self._worker = SqliteWorker(self.path, _SCHEMA, wal=True, name="response store")
        self._last_purge = 0.0
        """When the last purge ran (a clock reading); written only in the worker's thread."""

    # --- lifecycle

    async def start(self) -> None:
        """Open (or create) the database and delete what has expired."""
        await self._worker.start(then=partial(self._purge, now=self._clock()))

    async def close(self) -> None:
        await self._worker.close()

    # --- operations

    async def put(self, tenant: str, stored: StoredResponse) -> None:
        """Keep ``stored`` for ``tenant`` (replacing a row with its id); expired rows go now and then."""
        now = self._clock()
        await self._worker.run(partial(self._put, tenant=tenant, stored=stored, now=now))

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        """``tenant``'s response ``response_id``, or None (unknown, another tenant's, or expired)."""
        return await self._worker.run(partial(self._get, tenant=tenant, response_id=response_id, now=self._clock()))

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Delete ``tenant``'s response ``response_id``; whether there was one."""
        return await self._worker.run(partial(self._delete, tenant=tenant, response_id=response_id, now=self._clock()))

    async def purge(self) -> int:
        """Delete every expired row now; how many."""
        return await self._worker.run(partial(self._purge, now=self._clock()))

    # --- the store's thread (everything below runs there, never on the event loop)

    def _purge(self, conn: sqlite3.Connection, *, now: float) -> int:
        self._last_purge = now
        deleted = conn.execute("DELETE FROM responses WHERE expires_at <= ?", (now,)).rowcount
        if deleted:
            log.info("response store: %d expired responses deleted", deleted)
        return int(deleted)

    def _put(self, conn: sqlite3.Connection, *, tenant: str, stored: StoredResponse, now: float) -> None:
        row = (
            tenant,
            stored.id,
            now,
            now + self.ttl_seconds,
            orjson.dumps(stored.response),
            orjson.dumps(stored.input_items),
            orjson.dumps(stored.conversation),
        )
        conn.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        if now - self._last_purge >= self.purge_interval:
            self._purge(conn, now=now)

    def _get(self, conn: sqlite3.Connection, *, tenant: str, response_id: str, now: float) -> StoredResponse | None:
        row = conn.execute(
            "SELECT response, input_items, conversation FROM responses WHERE tenant = ? AND id = ? AND expires_at > ?",
            (tenant, response_id, now),
        ).fetchone()
        if row is None:
            return None
        return StoredResponse(orjson.loads(row[0]), orjson.loads(row[1]), orjson.loads(row[2]))

    def _delete(self, conn: sqlite3.Connection, *, tenant: str, response_id: str, now: float) -> bool:
        cursor = conn.execute(
            "DELETE FROM responses WHERE tenant = ? AND id = ? AND expires_at > ?", (tenant, response_id, now)
        )
        return cursor.rowcount > 0
