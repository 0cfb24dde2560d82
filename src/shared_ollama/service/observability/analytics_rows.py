"""How a finished request is stored as a row of the analytics table: its columns, the schema, and the conversions
(a record to a row here; a row another replica published, as a mapping, back to a row in ``analytics_share``)."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any

from shared_ollama.service.observability.records import RequestRecord
from shared_ollama.service.observability.sqlite_db import add_columns


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _flag(value: Any) -> int:
    return 1 if value else 0


# (column, SQL type, converter applied when a record becomes a row) — one column per RequestRecord field.
COLUMNS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("ts", "REAL NOT NULL", float),
    ("request_id", "TEXT NOT NULL", _text),
    ("tenant", "TEXT NOT NULL", _text),
    ("user", "TEXT", lambda value: None if value is None else str(value)),
    ("surface", "TEXT NOT NULL", _text),
    ("route", "TEXT NOT NULL", _text),
    ("model", "TEXT NOT NULL", _text),
    ("status", "INTEGER NOT NULL", int),
    ("code", "TEXT NOT NULL", _text),
    ("prompt_tokens", "INTEGER NOT NULL", int),
    ("completion_tokens", "INTEGER NOT NULL", int),
    ("queue_wait", "REAL NOT NULL", float),
    ("ttft", "REAL", _opt_float),
    ("latency", "REAL NOT NULL", float),
    ("eval_seconds", "REAL NOT NULL", float),
    ("load_seconds", "REAL NOT NULL", float),
    ("engine_seconds", "REAL NOT NULL DEFAULT 0", float),
    ("cache", "TEXT NOT NULL", _text),
    ("stream", "INTEGER NOT NULL", _flag),
    ("engine", "INTEGER NOT NULL", _flag),
    ("host", "TEXT NOT NULL DEFAULT ''", _text),
)

NAMES = tuple(name for name, _, _ in COLUMNS)
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS requests ({})".format(", ".join(f"{name} {kind}" for name, kind, _ in COLUMNS)),
    "CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)",
    "CREATE INDEX IF NOT EXISTS requests_tenant_ts ON requests (tenant, ts)",
)
INSERT = "INSERT INTO requests ({}) VALUES ({})".format(", ".join(NAMES), ", ".join("?" for _ in NAMES))

_FIELDS = attrgetter(*NAMES)
_STORED: dict[str, type | tuple[type, ...]] = {
    **dict.fromkeys(("ts", "queue_wait", "latency", "eval_seconds", "load_seconds", "engine_seconds"), float),
    **dict.fromkeys(("request_id", "tenant", "surface", "route", "model", "code", "cache", "host"), str),
    **dict.fromkeys(("status", "prompt_tokens", "completion_tokens"), int),
    **dict.fromkeys(("stream", "engine"), bool),
    "user": (str, type(None)),
    "ttft": (float, type(None)),
}
_AS_STORED = tuple(_STORED[name] for name, _, _ in COLUMNS)
"""Per column, the types its converter passes through unchanged (a flag as ``bool``: SQLite stores it as 1 or 0)."""


def record_row(rec: RequestRecord) -> tuple[Any, ...]:
    values = _FIELDS(rec)
    if all(map(isinstance, values, _AS_STORED)):  # the usual record: every field already as it is stored
        return tuple(values)
    return tuple(convert(value) for value, (_, _, convert) in zip(values, COLUMNS, strict=True))


def add_new_columns(conn: sqlite3.Connection) -> None:
    """A database of an older version gets the columns added since (empty for its old rows)."""
    add_columns(conn, "requests", [(name, kind) for name, kind, _ in COLUMNS])


INT_LIMIT = 2**63
"""SQLite's integers lie in [-INT_LIMIT, INT_LIMIT)."""


def mapped_row(values: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row from a mapping of column names (what a replica publishes; a column it lacks, from an older version, is
    its default: 0, "" or None). Raises ``ValueError`` or ``TypeError`` for a value its column cannot take."""
    if values.get("ts") is None or values.get("request_id") is None:
        raise ValueError("a published analytics row without its time or request id")
    row = []
    for name, kind, convert in COLUMNS:
        value = values.get(name)
        if value is None and "NOT NULL" in kind:
            value = "" if _STORED[name] is str else 0
        value = None if value is None else convert(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} is not a finite number")
        if isinstance(value, int) and not -INT_LIMIT <= value < INT_LIMIT:
            raise ValueError(f"{name} is out of SQLite's integer range")
        row.append(value)
    return tuple(row)


def row_mapping(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row as the mapping of column names a replica publishes."""
    return dict(zip(NAMES, row, strict=True))
