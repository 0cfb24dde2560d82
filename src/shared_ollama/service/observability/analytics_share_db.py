"""The SQLite side of shared analytics (``analytics_share``): what runs in the analytics store's own thread.

Tables, in every analytics file (empty without Redis):

- ``analytics_meta``: the file's store id (and the host that made it: a file copied to another machine gets an id
  of its own there), per stream the last entry its followers read, and which replica on the file publishes now
  (one at a time, for a lease: the others' rows go out with its own, so none reaches the stream twice).
- ``analytics_outbox``: rows written here and not yet taken by Redis, each as it is published (its JSON) with its
  time; the queue number (``AUTOINCREMENT``: never used twice) is the row's key on every other replica.
- ``analytics_imported``: per imported row, the publishing store and its queue number, so a row sent twice, or read
  by two replicas on one file, is inserted once.
"""

from __future__ import annotations

import socket
import sqlite3
import uuid
from typing import Any

import orjson

from shared_ollama.service.observability.analytics_rows import INSERT, row_mapping
from shared_ollama.service.observability.sqlite_db import delete_older, write_transaction

SHARE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS analytics_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS analytics_outbox "
    "(id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, body BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS analytics_outbox_ts ON analytics_outbox (ts)",
    "CREATE TABLE IF NOT EXISTS analytics_imported "
    "(origin TEXT NOT NULL, ref INTEGER NOT NULL, ts REAL NOT NULL, UNIQUE (origin, ref))",
    "CREATE INDEX IF NOT EXISTS analytics_imported_ts ON analytics_imported (ts)",
)
Entry = tuple[str, str, int, tuple[Any, ...]]
"""A stream entry to import: its id (``<ms>-<seq>``), the publishing store's id, its queue number, the row."""


def position(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _meta(conn: sqlite3.Connection, key: str) -> str | None:
    found = conn.execute("SELECT value FROM analytics_meta WHERE key = ?", (key,)).fetchone()
    return None if found is None else str(found[0])


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO analytics_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def store_identity(conn: sqlite3.Connection, *, stream: str, host: str | None = None) -> tuple[str, str]:
    """The file's store id and where its follower of ``stream`` resumes. The id is made on first use, and again
    when the file was made on another host (a copied volume must not pass for the original); after that, a read."""
    host = socket.gethostname() if host is None else host
    store_id = _meta(conn, "store_id")
    if store_id is None or _meta(conn, "store_host") != host:
        with write_transaction(conn):
            store_id = _meta(conn, "store_id")
            if store_id is None or _meta(conn, "store_host") != host:
                store_id = uuid.uuid4().hex
                _set_meta(conn, "store_id", store_id)
                _set_meta(conn, "store_host", host)
    return store_id, read_position(conn, stream=stream)


def read_position(conn: sqlite3.Connection, *, stream: str) -> str:
    return _meta(conn, f"read:{stream}") or "0-0"


def queue_written(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Queue for publishing the rows being written, inside their write transaction."""
    conn.executemany(
        "INSERT INTO analytics_outbox (ts, body) VALUES (?, ?)",
        [(row[0], orjson.dumps(row_mapping(row))) for row in rows],
    )


def claim_publishing(conn: sqlite3.Connection, *, me: str, now: float, lease: float) -> bool:
    """Whether ``me`` may publish the file's queue now: the turn is free, expired or its own (renewed when half of
    the lease is gone). Looks without the write lock first: the usual answer costs no write."""

    def holder() -> tuple[str, float]:
        name, _, until = (_meta(conn, "publisher") or "|0").partition("|")
        return name, float(until or 0)

    name, until = holder()
    if name == me and until - now > lease / 2:
        return True
    if name != me and until > now:
        return False
    with write_transaction(conn):
        name, until = holder()
        if name != me and until > now:
            return False
        _set_meta(conn, "publisher", f"{me}|{now + lease}")
    return True


def release_publishing(conn: sqlite3.Connection, *, me: str) -> None:
    """Give the turn up (a replica stopping): another replica on the file takes it at once."""
    conn.execute("DELETE FROM analytics_meta WHERE key = 'publisher' AND value LIKE ?", (f"{me}|%",))


def outbox_batch(conn: sqlite3.Connection, *, limit: int) -> list[tuple[int, bytes]]:
    """The next rows to publish, oldest first: (queue number, the row's JSON)."""
    cursor = conn.execute("SELECT id, body FROM analytics_outbox ORDER BY id LIMIT ?", (limit,))
    return [(int(number), bytes(body)) for number, body in cursor]


def outbox_sent(conn: sqlite3.Connection, *, upto: int) -> None:
    conn.execute("DELETE FROM analytics_outbox WHERE id <= ?", (upto,))


def outbox_size(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM analytics_outbox").fetchone()[0])


def import_rows(conn: sqlite3.Connection, *, entries: list[Entry], stream: str, last: str) -> tuple[int, int]:
    """Insert each entry's row unless this file has it already, and note ``last`` as read; one transaction (an
    entry the file refuses is rolled back alone and counted). Entries another follower on this file read already
    are left out before the lock is taken. Returns (rows inserted, entries refused)."""
    done = position(read_position(conn, stream=stream))
    todo = [entry for entry in entries if position(entry[0]) > done]
    if not todo and position(last) <= done:
        return 0, 0
    inserted = refused = 0
    mark = "INSERT OR IGNORE INTO analytics_imported (origin, ref, ts) VALUES (?, ?, ?)"
    with write_transaction(conn):
        for _, origin, ref, row in todo:
            conn.execute("SAVEPOINT entry")
            try:
                if conn.execute(mark, (origin, ref, row[0])).rowcount == 1:
                    conn.execute(INSERT, row)
                    inserted += 1
            except (sqlite3.Error, OverflowError, ValueError):
                conn.execute("ROLLBACK TO entry")
                refused += 1
            conn.execute("RELEASE entry")
        if position(last) > position(read_position(conn, stream=stream)):
            _set_meta(conn, f"read:{stream}", last)
    return inserted, refused


def purge_shared(conn: sqlite3.Connection, *, before: float, chunk: int) -> None:
    """Import marks and queued rows older than ``before`` (epoch seconds), ``chunk`` per statement."""
    delete_older(conn, "analytics_imported", before=before, chunk=chunk)
    delete_older(conn, "analytics_outbox", before=before, chunk=chunk, key="id")
