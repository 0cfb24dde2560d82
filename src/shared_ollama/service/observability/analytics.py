"""Persistent request analytics: finished requests in SQLite, written off the request path in batches.

``add()`` only appends to an in-memory queue; a background task writes the queue in one transaction every
``flush_interval`` seconds (sooner once ``batch_size`` records wait). Every sqlite call runs in the store's
``SqliteWorker`` thread, which also owns the connection. Queries aggregate in SQL (``GROUP BY``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.observability.analytics_rows import INSERT, SCHEMA, add_new_columns, record_row
from shared_ollama.service.observability.analytics_share import AnalyticsShare
from shared_ollama.service.observability.analytics_share_db import SHARE_SCHEMA, purge_shared, queue_written
from shared_ollama.service.observability.records import RequestRecord
from shared_ollama.service.observability.sqlite_db import delete_older, write_transaction
from shared_ollama.service.observability.sqlite_worker import SqliteWorker, rows_as_dicts

log = logging.getLogger(__name__)

RETENTION_EVERY = 3600.0
"""Seconds between retention passes of the background writer."""
PURGE_CHUNK = 5000
"""Rows one retention transaction deletes at most: another replica writing the file waits for one, not all."""

WINDOWS = MappingProxyType({"15m": 900.0, "1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0})
GROUPS = MappingProxyType(
    {
        "tenant": "tenant",
        "model": "model",
        "surface": "surface",
        "code": "code",
        "host": "host",
        "hour": "CAST(ts / 3600 AS INTEGER) * 3600",
        "minute": "CAST(ts / 60 AS INTEGER) * 60",
    }
)
TIME_GROUPS = frozenset({"hour", "minute"})


AGGREGATES = (
    "requests",
    "errors",
    "rejected",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "avg_latency_ms",
    "max_latency_ms",
    "avg_queue_wait_ms",
)
_INT_AGGREGATES = 6
_FAILED_SQL = "status >= 400 AND code != 'client_closed'"
"""A failed request: an error answer; a client that went away (499 ``client_closed``) is not one of ours."""
_AGG_SQL = (
    f"COUNT(*), COALESCE(SUM({_FAILED_SQL}), 0), COALESCE(SUM(engine = 0 AND {_FAILED_SQL}), 0), "
    "COALESCE(SUM(cache IN ('hit', 'semantic-hit')), 0), COALESCE(SUM(prompt_tokens), 0), "
    "COALESCE(SUM(completion_tokens), 0), COALESCE(AVG(latency), 0) * 1000, COALESCE(MAX(latency), 0) * 1000, "
    "COALESCE(AVG(queue_wait), 0) * 1000"
)


def _aggregates(values: tuple[Any, ...]) -> dict[str, Any]:
    return {
        name: int(value) if i < _INT_AGGREGATES else round(float(value), 3)
        for i, (name, value) in enumerate(zip(AGGREGATES, values, strict=True))
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AnalyticsStore:
    """Finished requests, persisted to SQLite in batches by a background task; aggregate queries over windows."""

    def __init__(
        self,
        path: Path,
        *,
        retention_days: float = 30.0,
        flush_interval: float = 0.5,
        batch_size: int = 500,
        max_pending: int = 100_000,
        share: AnalyticsShare | None = None,
    ) -> None:
        if retention_days <= 0 or flush_interval <= 0 or batch_size < 1 or max_pending < 1:
            raise ValueError("retention_days and flush_interval must be > 0, batch_size and max_pending >= 1")
        self.path = Path(path)
        self.retention_days = retention_days
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_pending = max_pending
        self._pending: deque[RequestRecord] = deque()
        self._written = 0
        self._dropped = 0
        self._closed = False
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self.share = share
        """With Redis: the rows written here published, and other replicas' rows imported (``analytics_share``)."""
        schema = SCHEMA + SHARE_SCHEMA
        self._worker = SqliteWorker(self.path, schema, wal=True, migrate=add_new_columns, name="analytics store")
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle

    async def start(self) -> None:
        """Open the database, apply retention once and start the background writer."""
        if self._worker.running or self._closed:
            raise RuntimeError("analytics store already started or closed")
        await self._worker.start()
        try:
            await self._worker.run(partial(self._purge, now=time.time()))
        except BaseException as exc:
            # The file busy past the timeout (another replica's long write) fails nothing: the next pass purges.
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
                with contextlib.suppress(Exception):
                    await self._worker.close()
                raise
        if self.share is not None:
            await self.share.start(self._worker.run)
        self._task = asyncio.create_task(self._writer(), name="analytics-writer")

    async def close(self) -> None:
        """Stop the writer, write everything pending, close the database. Records added later are dropped."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._task is not None:
                self._stop.set()
                self._wake.set()
                await self._task
                self._task = None
            if self._worker.running:
                try:
                    await self.flush()
                except Exception:
                    log.error("analytics: %d records could not be written before close", len(self._pending))
        finally:  # even when the close itself is cancelled: no task, connection or thread left behind
            try:
                if self.share is not None:
                    await self.share.close()  # publishing what is queued, bounded (the rest stays in the file)
            finally:
                with contextlib.suppress(Exception):
                    await self._worker.close()

    # --- recording

    def add(self, record: RequestRecord) -> None:
        """Queue one finished request for writing. O(1); never blocks, never raises."""
        try:
            if self._closed:
                self._dropped += 1
                return
            self._pending.append(record)
            if len(self._pending) > self.max_pending:
                self._pending.popleft()
                self._dropped += 1
            if len(self._pending) >= self.batch_size:
                self._wake.set()
        except Exception:  # pragma: no cover - defensive: accounting must never fail a request
            self._dropped += 1

    async def flush(self) -> None:
        """Write every record pending now, in one transaction. Raises if the database write fails (the
        records are then queued again)."""
        async with self._lock:
            if not self._pending or not self._worker.running:
                return
            batch, self._pending = self._pending, deque()
            future = asyncio.ensure_future(self._worker.run(partial(self._write, batch=batch)))
            future.add_done_callback(partial(self._written_cb, batch))
            # Shielded: a cancelled caller must not lose the batch; the writer thread finishes it regardless.
            await asyncio.shield(future)

    def _written_cb(self, batch: deque[RequestRecord], future: asyncio.Future[tuple[int, int]]) -> None:
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            log.warning("analytics: writing %d records failed: %r; will retry", len(batch), error)
            batch.extend(self._pending)
            self._pending = batch
            while len(self._pending) > self.max_pending:
                self._pending.popleft()
                self._dropped += 1
            return
        written, bad = future.result()
        self._written += written
        self._dropped += bad
        if self.share is not None and written:
            self.share.written()

    async def _writer(self) -> None:
        last_retention = time.monotonic()
        failed = False
        while not self._stop.is_set():
            # After a failed write, wait out the interval (not a pending-count wake-up) so a stuck disk isn't hammered.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for((self._stop if failed else self._wake).wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
                failed = False
                if time.monotonic() - last_retention >= RETENTION_EVERY:
                    last_retention = time.monotonic()
                    await self._worker.run(partial(self._purge, now=time.time()))
            except Exception:
                failed = True  # already logged by _written_cb / _purge

    # --- queries

    async def query(
        self, *, window: str, tenant: str | None, group_by: str | None, now: float | None = None
    ) -> dict[str, Any]:
        """Aggregates over the last ``window`` (all tenants or one), optionally grouped."""
        if window not in WINDOWS:
            raise InvalidRequest(f"window must be one of {', '.join(WINDOWS)} (got {window!r})", param="window")
        if group_by is not None and group_by not in GROUPS:
            raise InvalidRequest(
                f"group_by must be one of {', '.join(GROUPS)} or absent (got {group_by!r})", param="group_by"
            )
        until = time.time() if now is None else float(now)
        since = until - WINDOWS[window]
        await self.flush()
        totals, groups = await self._worker.run(
            partial(self._aggregate, since=since, until=until, tenant=tenant, group_by=group_by)
        )
        return {
            "window": window,
            "since": since,
            "until": until,
            "tenant": tenant,
            "group_by": group_by,
            "totals": totals,
            "groups": groups,
        }

    async def recent_errors(self, limit: int = 20, tenant: str | None = None) -> list[dict[str, Any]]:
        """The latest failed requests (status >= 400, clients that went away aside), newest first."""
        if not 1 <= limit <= 1000:
            raise InvalidRequest(f"limit must be between 1 and 1000 (got {limit})", param="limit")
        await self.flush()
        return await self._worker.run(partial(self._errors, limit=limit, tenant=tenant))

    def stats(self) -> dict[str, Any]:
        shared = {"shared": self.share.stats()} if self.share is not None else {}
        return {
            "pending": len(self._pending),
            "written": self._written,
            "dropped": self._dropped,
            "path": str(self.path),
        } | shared

    # --- the writer thread (everything below runs there, never on the event loop)

    def _write(self, conn: sqlite3.Connection, *, batch: deque[RequestRecord]) -> tuple[int, int]:
        """Insert ``batch`` in one transaction; returns (rows written, records skipped as malformed)."""
        rows: list[tuple[Any, ...]] = []
        bad = 0
        for rec in batch:
            try:
                rows.append(record_row(rec))
            except Exception:
                bad += 1
        if bad:
            log.warning("analytics: skipped %d malformed records", bad)
        if not rows:
            return 0, bad
        with write_transaction(conn):  # the write lock at once (waiting out another writer's, up to the timeout)
            conn.executemany(INSERT, rows)
            if self.share is not None:  # queued for the other replicas in the same transaction: never lost
                queue_written(conn, rows)
        return len(rows), bad

    def _purge(self, conn: sqlite3.Connection, *, now: float) -> int:
        """Delete the rows past the retention, ``PURGE_CHUNK`` per transaction (each a short write lock)."""
        before = now - self.retention_days * 86400
        try:
            purge_shared(conn, before=before, chunk=PURGE_CHUNK)
            total = delete_older(conn, "requests", before=before, chunk=PURGE_CHUNK)
        except sqlite3.Error:
            log.warning("analytics: retention pass failed", exc_info=True)
            raise
        if total > 0:
            log.info("analytics: deleted %d records older than %g days", total, self.retention_days)
        return total

    def _aggregate(
        self, conn: sqlite3.Connection, *, since: float, until: float, tenant: str | None, group_by: str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        where = "ts >= ? AND ts <= ?"
        params: tuple[Any, ...] = (since, until)
        if tenant is not None:
            where += " AND tenant = ?"
            params += (tenant,)
        totals = _aggregates(conn.execute(f"SELECT {_AGG_SQL} FROM requests WHERE {where}", params).fetchone())
        groups: list[dict[str, Any]] = []
        if group_by is not None:
            timed = group_by in TIME_GROUPS
            order = "k ASC" if timed else "COUNT(*) DESC, k ASC"
            sql = f"SELECT {GROUPS[group_by]} AS k, {_AGG_SQL} FROM requests WHERE {where} GROUP BY k ORDER BY {order}"
            for key, *values in conn.execute(sql, params):
                groups.append({"key": _iso(key) if timed else key, **_aggregates(tuple(values))})
        return totals, groups

    def _errors(self, conn: sqlite3.Connection, *, limit: int, tenant: str | None) -> list[dict[str, Any]]:
        where = _FAILED_SQL + (" AND tenant = ?" if tenant is not None else "")
        params: tuple[Any, ...] = ((tenant,) if tenant is not None else ()) + (limit,)
        cursor = conn.execute(
            "SELECT ts, request_id, tenant, route, model, status, code, host FROM requests "
            f"WHERE {where} ORDER BY ts DESC, rowid DESC LIMIT ?",
            params,
        )
        return rows_as_dicts(cursor)
