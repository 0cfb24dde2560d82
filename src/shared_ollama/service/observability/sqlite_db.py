"""Opening the service's SQLite files (analytics, audit, stored responses, tenants) one way: the directory made,
autocommit, a busy timeout, optionally WAL, the schema applied, and the connection closed again if any of it
fails. Callers run it (and every later call on the connection) in a thread of their own, off the event loop."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

BUSY_TIMEOUT = 10.0
"""Seconds a statement waits for another connection's lock before failing."""


def open_database(
    path: Path,
    schema: Iterable[str],
    *,
    wal: bool = False,
    migrate: Callable[[sqlite3.Connection], None] | None = None,
    driver: Callable[..., sqlite3.Connection] | None = None,
) -> sqlite3.Connection:
    """A connection to ``path`` with ``schema`` (``CREATE ... IF NOT EXISTS`` statements) applied, then ``migrate``
    (changes a database of an older version needs). ``wal``: write-ahead logging with normal sync, for a file
    written often by one writer while others read. ``driver``: another DB-API ``connect`` than the standard
    library's (``pysqlite3``'s, which can load extensions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connect = sqlite3.connect if driver is None else driver
    conn = connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT)
    try:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        for statement in schema:
            conn.execute(statement)
        if migrate is not None:
            migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def write_transaction(conn: Any) -> Iterator[Any]:
    """One write transaction on an autocommit connection: the write lock taken at once (``BEGIN IMMEDIATE``,
    waiting out another connection's up to the busy timeout), committed when the block ends, rolled back if it
    raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):  # the standard library's sqlite3 or pysqlite3's: the first error matters
            conn.execute("ROLLBACK")
        raise


def delete_older(conn: Any, table: str, *, before: float, chunk: int, key: str = "rowid") -> int:
    """Delete ``table``'s rows whose ``ts`` is before ``before``, ``chunk`` rows per statement (each its own short
    write lock: another process writing the file waits for one chunk, not all). Returns the rows deleted."""
    sql = f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE ts < ? LIMIT ?)"
    total = 0
    for _ in range(100_000):  # bounded: 100,000 chunks
        deleted = max(conn.execute(sql, (before, chunk)).rowcount, 0)
        total += deleted
        if deleted < chunk:
            break
    return total


def add_columns(conn: sqlite3.Connection, table: str, columns: Iterable[tuple[str, str]]) -> None:
    """Add to ``table`` the ``(name, SQL type)`` columns it lacks (a database of an older version). The change
    is made in one write transaction that looks again first, so two processes opening the file at once (two
    gateway replicas) do not both add a column: the second waits (busy timeout), then finds it there."""
    columns = list(columns)

    def missing() -> list[tuple[str, str]]:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        return [(name, kind) for name, kind in columns if name not in have]

    if not missing():
        return  # the usual case: no transaction at all
    with write_transaction(conn):
        for name, kind in missing():
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
