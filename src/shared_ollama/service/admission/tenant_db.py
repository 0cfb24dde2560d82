"""Where the tenants and keys changed through the admin API are kept: SQLite in the data dir, and Redis when the
replicas share state.

Both hold one ``Snapshot``: a version number, the tenants the API created, changed or deleted (each as its
``TenantSpec`` JSON without keys; ``None`` for a deletion) and the keys the API made (SHA-256 digests only) or
revoked. A change is written whole and only if the version is still the one it was made from (optimistic
concurrency: SQLite's write lock, Redis's ``WATCH``); the caller retries on a newer one. Admin changes are rare
and the snapshot is small, so writing it whole keeps both stores trivially consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import WatchError

from shared_ollama.service.observability.sqlite_db import open_database

JsonDict = dict[str, Any]

REDIS_PREFIX = "shared-ollama:tenants:"
VERSION_KEY = REDIS_PREFIX + "version"
SPECS_KEY = REDIS_PREFIX + "specs"
KEYS_KEY = REDIS_PREFIX + "keys"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key made through the API (``revoked`` false), or a configured key revoked through it (``revoked`` true)."""

    id: str
    tenant: str
    digest: str
    """Hex SHA-256 of the key; the key itself is never stored."""
    prefix: str
    created_at: float
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int = 0
    tenants: Mapping[str, JsonDict | None] = field(default_factory=dict)
    """Tenant name -> its spec as the API set it (no keys), or ``None``: deleted through the API."""
    keys: Mapping[str, KeyRecord] = field(default_factory=dict)


def _spec_text(spec: JsonDict | None) -> str:
    return json.dumps(spec, sort_keys=True)


def _key_text(record: KeyRecord) -> str:
    return json.dumps(asdict(record), sort_keys=True)


def _key_record(text: str | bytes) -> KeyRecord:
    data = json.loads(text)
    return KeyRecord(
        id=str(data["id"]),
        tenant=str(data["tenant"]),
        digest=str(data["digest"]),
        prefix=str(data["prefix"]),
        created_at=float(data["created_at"]),
        revoked=bool(data.get("revoked", False)),
    )


# ---------------------------------------------------------------------------------------------------- SQLite

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY, spec TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, record TEXT NOT NULL)",
)


class SqliteTenantDB:
    """The snapshot in ``<data_dir>/tenants.sqlite3``; every call opens its own connection in a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        return open_database(self.path, _SCHEMA)

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
        return int(row[0]) if row else 0

    def _load(self) -> Snapshot:
        with contextlib.closing(self._connect()) as conn:
            conn.execute("BEGIN")
            try:
                version = self._version(conn)
                tenants = {name: json.loads(spec) for name, spec in conn.execute("SELECT name, spec FROM tenants")}
                keys = {key_id: _key_record(text) for key_id, text in conn.execute("SELECT id, record FROM keys")}
            finally:
                conn.execute("COMMIT")
        return Snapshot(version, tenants, keys)

    def _save(self, snapshot: Snapshot, expected: int | None) -> bool:
        with contextlib.closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if expected is not None and self._version(conn) != expected:
                    conn.execute("ROLLBACK")
                    return False
                conn.execute("DELETE FROM tenants")
                conn.execute("DELETE FROM keys")
                conn.executemany(
                    "INSERT INTO tenants (name, spec) VALUES (?, ?)",
                    [(name, _spec_text(spec)) for name, spec in snapshot.tenants.items()],
                )
                conn.executemany(
                    "INSERT INTO keys (id, tenant, record) VALUES (?, ?, ?)",
                    [(r.id, r.tenant, _key_text(r)) for r in snapshot.keys.values()],
                )
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES ('version', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    (str(snapshot.version),),
                )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        return True

    async def load(self) -> Snapshot:
        return await asyncio.to_thread(self._load)

    async def save(self, snapshot: Snapshot, expected: int | None) -> bool:
        """Write ``snapshot`` if the stored version is ``expected`` (always when ``None``); False if it moved."""
        return await asyncio.to_thread(self._save, snapshot, expected)


# ---------------------------------------------------------------------------------------------------- Redis


class RedisTenantDB:
    """The snapshot shared by the replicas: a version counter and two hashes (specs, keys)."""

    def __init__(self, url: str) -> None:
        self._client: Redis = Redis.from_url(
            url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        )

    async def version(self) -> int:
        raw = await self._client.get(VERSION_KEY)
        return int(raw) if raw is not None else 0

    async def load(self) -> Snapshot:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.get(VERSION_KEY)
            pipe.hgetall(SPECS_KEY)
            pipe.hgetall(KEYS_KEY)
            raw_version, specs, keys = await pipe.execute()
        return Snapshot(
            int(raw_version) if raw_version is not None else 0,
            {name.decode(): json.loads(text) for name, text in specs.items()},
            {key_id.decode(): _key_record(text) for key_id, text in keys.items()},
        )

    async def save(self, snapshot: Snapshot, expected: int | None) -> bool:
        """Write ``snapshot`` if the shared version is ``expected`` (always when ``None``); False if it moved."""
        async with self._client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(VERSION_KEY)
                raw = await pipe.get(VERSION_KEY)
                if expected is not None and (int(raw) if raw is not None else 0) != expected:
                    await pipe.unwatch()
                    return False
                pipe.multi()
                pipe.delete(SPECS_KEY, KEYS_KEY)
                if snapshot.tenants:
                    pipe.hset(SPECS_KEY, mapping={name: _spec_text(s) for name, s in snapshot.tenants.items()})
                if snapshot.keys:
                    pipe.hset(KEYS_KEY, mapping={r.id: _key_text(r) for r in snapshot.keys.values()})
                pipe.set(VERSION_KEY, snapshot.version)
                await pipe.execute()
            except WatchError:
                return False
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.aclose()
