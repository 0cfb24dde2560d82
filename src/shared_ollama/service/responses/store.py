"""Stored responses in SQLite: one row per (tenant, response id), expiring ``ttl_seconds`` after creation.

Every sqlite call (and the JSON encoding of a row) runs in one dedicated thread, which also owns the connection;
the event loop only awaits it. A tenant sees its own rows only: the key is (tenant, id), so another tenant's id is
simply not there. Expired rows are never returned, and are deleted at start-up and then at most once per
``purge_interval`` seconds, by the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from shared_ollama.service.observability.sqlite_db import open_database

log = logging.getLogger(__name__)

T = TypeVar("T")
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
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        """Created, used and closed only in the store's thread."""
        self._last_purge = 0.0

    # --- lifecycle

    async def start(self) -> None:
        """Open (or create) the database and delete what has expired."""
        if self._executor is not None:
            raise RuntimeError("response store already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="responses-sqlite")
        try:
            await self._call(self._open)
            await self._call(self._purge, self._clock())
        except BaseException:
            with contextlib.suppress(Exception):
                await self._call(self._close_conn)
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._call(self._close_conn)
        finally:
            self._executor.shutdown(wait=False)
            self._executor = None

    # --- operations

    async def put(self, tenant: str, stored: StoredResponse) -> None:
        """Keep ``stored`` for ``tenant`` (replacing a row with its id); expired rows go now and then."""
        now = self._clock()
        await self._call(self._put, tenant, stored, now)

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        """``tenant``'s response ``response_id``, or None (unknown, another tenant's, or expired)."""
        return await self._call(self._get, tenant, response_id, self._clock())

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Delete ``tenant``'s response ``response_id``; whether there was one."""
        return await self._call(self._delete, tenant, response_id, self._clock())

    async def purge(self) -> int:
        """Delete every expired row now; how many."""
        return await self._call(self._purge, self._clock())

    # --- the store's thread (everything below runs there, never on the event loop)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("response store is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("response store database is not open")
        return self._conn

    def _open(self) -> None:
        self._conn = open_database(self.path, _SCHEMA, wal=True)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _purge(self, now: float) -> int:
        self._last_purge = now
        deleted = self._db().execute("DELETE FROM responses WHERE expires_at <= ?", (now,)).rowcount
        if deleted:
            log.info("response store: %d expired responses deleted", deleted)
        return int(deleted)

    def _put(self, tenant: str, stored: StoredResponse, now: float) -> None:
        row = (
            tenant,
            stored.id,
            now,
            now + self.ttl_seconds,
            orjson.dumps(stored.response),
            orjson.dumps(stored.input_items),
            orjson.dumps(stored.conversation),
        )
        self._db().execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        if now - self._last_purge >= self.purge_interval:
            self._purge(now)

    def _get(self, tenant: str, response_id: str, now: float) -> StoredResponse | None:
        row = (
            self._db()
            .execute(
                "SELECT response, input_items, conversation FROM responses "
                "WHERE tenant = ? AND id = ? AND expires_at > ?",
                (tenant, response_id, now),
            )
            .fetchone()
        )
        if row is None:
            return None
        return StoredResponse(orjson.loads(row[0]), orjson.loads(row[1]), orjson.loads(row[2]))

    def _delete(self, tenant: str, response_id: str, now: float) -> bool:
        cursor = self._db().execute(
            "DELETE FROM responses WHERE tenant = ? AND id = ? AND expires_at > ?", (tenant, response_id, now)
        )
        return cursor.rowcount > 0
