"""Agents and their runs in SQLite (``<data_dir>/agents.sqlite3``), per tenant.

Every row is keyed by its tenant, so another tenant's agent (and its runs) is simply not there; ``list(None)``
is the admin's view of all of them. An agent is its definition (whatever the API accepted: model, system,
tools, ...) plus ``name``, ``tenant``, ``created_at`` and ``updated_at`` (epoch seconds). A run is stored whole
(steps, usage, the native conversation after it) and read back either as a summary (``runs``) or whole
(``run``); a session's conversation is the ``messages`` of its newest run. Runs older than ``retention_days``
are deleted at start-up and then at most once an hour, by the next write. Every sqlite call (and the JSON
coding of a row) runs in the store's ``SqliteWorker`` thread.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from shared_ollama.errors import Conflict, InvalidRequest
from shared_ollama.service.observability.sqlite_db import write_transaction
from shared_ollama.service.observability.sqlite_worker import SqliteWorker

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]

RESERVED = ("name", "tenant", "created_at", "updated_at")
"""Keys the store sets itself: a definition's own values for them are not stored."""
OUTPUT_PREVIEW = 200
"""Characters of a run's output in its summary."""
MAX_RUNS_LIMIT = 1000
PURGE_INTERVAL = 3600.0
"""Seconds between two retention passes made by writes."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS agents (tenant TEXT NOT NULL, name TEXT NOT NULL, definition BLOB NOT NULL, "
    "created_at REAL NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (tenant, name))",
    "CREATE TABLE IF NOT EXISTS agent_runs (tenant TEXT NOT NULL, agent TEXT NOT NULL, run_id TEXT NOT NULL, "
    "session TEXT, created_at REAL NOT NULL, stopped TEXT NOT NULL, output_preview TEXT NOT NULL, "
    "usage BLOB NOT NULL, run BLOB NOT NULL, PRIMARY KEY (tenant, agent, run_id))",
    "CREATE INDEX IF NOT EXISTS agent_runs_newest ON agent_runs (tenant, agent, created_at)",
    "CREATE INDEX IF NOT EXISTS agent_runs_session ON agent_runs (tenant, agent, session, created_at)",
    "CREATE INDEX IF NOT EXISTS agent_runs_age ON agent_runs (created_at)",
)


def _agent(tenant: str, name: str, definition: bytes, created_at: float, updated_at: float) -> JsonDict:
    return {
        "name": name,
        "tenant": tenant,
        **orjson.loads(definition),
        "created_at": created_at,
        "updated_at": updated_at,
    }


def _definition(definition: JsonDict) -> bytes:
    return orjson.dumps({key: value for key, value in definition.items() if key not in RESERVED})


class AgentStore:
    """Agents and runs per tenant; ``start`` before use, ``close`` at shutdown."""

    def __init__(
        self,
        path: Path,
        *,
        retention_days: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retention_days <= 0:
            raise ValueError("retention_days must be > 0")
        self.path = Path(path)
        self.retention_days = retention_days
        self._clock = clock
        self._worker = SqliteWorker(self.path, _SCHEMA, wal=True, name="agent store")
        self._last_purge = 0.0
        """When runs were last purged (a clock reading); written only in the worker's thread."""

    # --- lifecycle

    async def start(self) -> None:
        """Open (or create) the database and delete the runs past retention."""
        await self._worker.start(then=partial(self._purge, now=self._clock()))

    async def close(self) -> None:
        await self._worker.close()

    # --- agents

    async def create(self, tenant: str, name: str, definition: JsonDict) -> JsonDict:
        """Store a new agent; ``Conflict`` when ``tenant`` already has one called ``name``."""
        blob = _definition(definition)
        return await self._worker.run(partial(self._create, tenant=tenant, name=name, blob=blob, now=self._clock()))

    async def get(self, tenant: str, name: str) -> JsonDict | None:
        return await self._worker.run(partial(self._get, tenant=tenant, name=name))

    async def list(self, tenant: str | None) -> list[JsonDict]:
        """``tenant``'s agents by name (``None``: every tenant's, by name then tenant)."""
        return await self._worker.run(partial(self._list, tenant=tenant))

    async def update(self, tenant: str, name: str, definition: JsonDict) -> JsonDict | None:
        """Replace the agent's definition (its ``created_at`` kept); None when there is no such agent."""
        blob = _definition(definition)
        return await self._worker.run(partial(self._update, tenant=tenant, name=name, blob=blob, now=self._clock()))

    async def delete(self, tenant: str, name: str) -> bool:
        """Delete the agent and its runs; whether there was one. (Its documents are ``Documents.delete_agent``'s.)"""
        return await self._worker.run(partial(self._delete, tenant=tenant, name=name))

    # --- runs

    async def add_run(self, tenant: str, agent: str, run: JsonDict) -> bool:
        """Keep a finished run (``run_id``, ``session``, ``created_at``, ``stopped``, ``output``, ``steps``,
        ``usage``, ``messages``; other keys are kept too). False (nothing stored) when the agent is gone by now.
        ``Conflict`` when the agent already has a run with this id."""
        if not isinstance(run.get("run_id"), str) or not run["run_id"]:
            raise ValueError("a run needs its run_id")
        full = {
            "session": None,
            "stopped": "",
            "output": "",
            "steps": [],
            "usage": {},
            "messages": [],
            **run,
        }
        if full.get("created_at") is None:
            full["created_at"] = self._clock()
        row = (
            tenant,
            agent,
            full["run_id"],
            full["session"],
            float(full["created_at"]),
            str(full["stopped"]),
            str(full["output"] or "")[:OUTPUT_PREVIEW],
            orjson.dumps(full["usage"]),
            orjson.dumps(full),
        )
        return await self._worker.run(partial(self._add_run, row=row, now=self._clock()))

    async def runs(self, tenant: str, agent: str, *, limit: int = 50, before: float | None = None) -> list[JsonDict]:
        """The agent's runs newest first, as summaries (``run_id``, ``session``, ``created_at``, ``stopped``,
        ``output`` cut to 200 characters, ``usage``); ``before``: only runs created before that time."""
        if not 1 <= limit <= MAX_RUNS_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_RUNS_LIMIT} (got {limit})", param="limit")
        return await self._worker.run(partial(self._runs, tenant=tenant, agent=agent, limit=limit, before=before))

    async def run(self, tenant: str, agent: str, run_id: str) -> JsonDict | None:
        """The whole run as it was stored, or None."""
        return await self._worker.run(partial(self._run, tenant=tenant, agent=agent, run_id=run_id))

    async def session_messages(self, tenant: str, agent: str, session: str) -> list[JsonDict]:
        """The conversation a session continues: the ``messages`` of its newest run ([] for a new session)."""
        return await self._worker.run(partial(self._session_messages, tenant=tenant, agent=agent, session=session))

    async def purge(self) -> int:
        """Delete every run past retention now; how many."""
        return await self._worker.run(partial(self._purge, now=self._clock()))

    # --- the store's thread (everything below runs there, never on the event loop)

    def _purge(self, conn: sqlite3.Connection, *, now: float) -> int:
        self._last_purge = now
        deleted = conn.execute(
            "DELETE FROM agent_runs WHERE created_at < ?", (now - self.retention_days * 86400,)
        ).rowcount
        if deleted:
            log.info("agent store: %d runs older than %g days deleted", deleted, self.retention_days)
        return int(deleted)

    def _maybe_purge(self, conn: sqlite3.Connection, now: float) -> None:
        if now - self._last_purge >= PURGE_INTERVAL:
            self._purge(conn, now=now)

    def _create(self, conn: sqlite3.Connection, *, tenant: str, name: str, blob: bytes, now: float) -> JsonDict:
        try:
            conn.execute("INSERT INTO agents VALUES (?, ?, ?, ?, ?)", (tenant, name, blob, now, now))
        except sqlite3.IntegrityError:
            raise Conflict(f"an agent named {name!r} already exists", param="name") from None
        return _agent(tenant, name, blob, now, now)

    def _get(self, conn: sqlite3.Connection, *, tenant: str, name: str) -> JsonDict | None:
        row = conn.execute(
            "SELECT tenant, name, definition, created_at, updated_at FROM agents WHERE tenant = ? AND name = ?",
            (tenant, name),
        ).fetchone()
        return None if row is None else _agent(*row)

    def _list(self, conn: sqlite3.Connection, *, tenant: str | None) -> list[JsonDict]:
        sql = "SELECT tenant, name, definition, created_at, updated_at FROM agents"
        if tenant is None:
            rows = conn.execute(f"{sql} ORDER BY name, tenant")
        else:
            rows = conn.execute(f"{sql} WHERE tenant = ? ORDER BY name", (tenant,))
        return [_agent(*row) for row in rows]

    def _update(self, conn: sqlite3.Connection, *, tenant: str, name: str, blob: bytes, now: float) -> JsonDict | None:
        changed = conn.execute(
            "UPDATE agents SET definition = ?, updated_at = ? WHERE tenant = ? AND name = ?", (blob, now, tenant, name)
        ).rowcount
        return self._get(conn, tenant=tenant, name=name) if changed else None

    def _delete(self, conn: sqlite3.Connection, *, tenant: str, name: str) -> bool:
        with write_transaction(conn):
            deleted = conn.execute("DELETE FROM agents WHERE tenant = ? AND name = ?", (tenant, name)).rowcount
            conn.execute("DELETE FROM agent_runs WHERE tenant = ? AND agent = ?", (tenant, name))
        return deleted > 0

    def _add_run(self, conn: sqlite3.Connection, *, row: tuple[Any, ...], now: float) -> bool:
        tenant, agent, run_id = row[:3]
        try:
            added = conn.execute(
                "INSERT INTO agent_runs SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM agents WHERE tenant = ? AND name = ?)",
                (*row, tenant, agent),
            ).rowcount
        except sqlite3.IntegrityError:
            raise Conflict(f"agent {agent!r} already has a run {run_id!r}", param="run_id") from None
        self._maybe_purge(conn, now)
        return added > 0

    def _runs(
        self, conn: sqlite3.Connection, *, tenant: str, agent: str, limit: int, before: float | None
    ) -> list[JsonDict]:
        where, params = "tenant = ? AND agent = ?", [tenant, agent]
        if before is not None:
            where += " AND created_at < ?"
            params.append(before)
        rows = conn.execute(
            "SELECT run_id, session, created_at, stopped, output_preview, usage FROM agent_runs "
            f"WHERE {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (*params, limit),
        )
        return [
            {
                "run_id": run_id,
                "session": session,
                "created_at": created_at,
                "stopped": stopped,
                "output": output,
                "usage": orjson.loads(usage),
            }
            for run_id, session, created_at, stopped, output, usage in rows
        ]

    def _run(self, conn: sqlite3.Connection, *, tenant: str, agent: str, run_id: str) -> JsonDict | None:
        row = conn.execute(
            "SELECT run FROM agent_runs WHERE tenant = ? AND agent = ? AND run_id = ?", (tenant, agent, run_id)
        ).fetchone()
        return None if row is None else orjson.loads(row[0])

    def _session_messages(self, conn: sqlite3.Connection, *, tenant: str, agent: str, session: str) -> list[JsonDict]:
        row = conn.execute(
            "SELECT run FROM agent_runs WHERE tenant = ? AND agent = ? AND session = ? "
            "ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (tenant, agent, session),
        ).fetchone()
        if row is None:
            return []
        messages = orjson.loads(row[0]).get("messages")
        return messages if isinstance(messages, list) else []
