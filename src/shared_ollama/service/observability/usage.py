"""Usage from the analytics store: requests, tokens and engine seconds per tenant, model, end user or engine
host over a window, optionally per hour or day (``GET /api/v1/usage``).

Usage counts the requests a model answered: those that ran on the engine and the cache's hits (a hit costs a
request and no tokens, as the quotas count it); refusals, errors (an unknown model, an engine failure) and the
envelopes of batches (whose items are counted one by one) are not usage. Tokens are the engine's own counts;
engine seconds its own time for each request (``total_duration``). Queries read the database through a
connection of their own in a worker thread (the store's writer is never held up), after the store has written
what it had pending.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.observability.analytics import WINDOWS, AnalyticsStore

JsonDict = dict[str, Any]
GROUPS = MappingProxyType({"tenant": "tenant", "model": "model", "user": "user", "host": "host"})
BUCKETS = MappingProxyType({"hour": 3600, "day": 86400})
SERVED_SQL = "(engine = 1 OR cache IN ('hit', 'semantic-hit')) AND status < 400"
_SUMS_SQL = (
    "COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(engine_seconds), 0)"
)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    window: str
    group_by: tuple[str, ...]
    bucket: str | None = None
    tenant: str | None = None
    """Only this tenant's requests (a user's own view); None: every tenant."""

    @classmethod
    def parse(cls, *, window: str, group_by: str, bucket: str | None, tenant: str | None) -> UsageQuery:
        """Validate the endpoint's parameters (a clear 400 naming the one that is wrong)."""
        if window not in WINDOWS:
            raise InvalidRequest(f"window must be one of {', '.join(WINDOWS)} (got {window!r})", param="window")
        groups = tuple(part.strip() for part in group_by.split(",") if part.strip())
        if not groups or any(g not in GROUPS for g in groups) or len(set(groups)) != len(groups):
            raise InvalidRequest(
                f"group_by must be one or more of {', '.join(GROUPS)}, comma-separated (got {group_by!r})",
                param="group_by",
            )
        if bucket is not None and bucket not in BUCKETS:
            raise InvalidRequest(
                f"bucket must be one of {', '.join(BUCKETS)} or absent (got {bucket!r})", param="bucket"
            )
        return cls(window, groups, bucket, tenant)


def _sums(values: tuple[Any, ...]) -> JsonDict:
    requests, prompt, completion, seconds = values
    return {
        "requests": int(requests),
        "prompt_tokens": int(prompt),
        "completion_tokens": int(completion),
        "total_tokens": int(prompt) + int(completion),
        "engine_seconds": round(float(seconds), 3),
    }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def usage_rows(
    conn: sqlite3.Connection, query: UsageQuery, since: float, until: float
) -> tuple[JsonDict, list[JsonDict]]:
    """The totals and the rows (per group, and per time bucket when asked) of ``query`` between two times."""
    where = f"ts >= ? AND ts <= ? AND {SERVED_SQL}"
    params: tuple[Any, ...] = (since, until)
    if query.tenant is not None:
        where += " AND tenant = ?"
        params += (query.tenant,)
    totals = _sums(conn.execute(f"SELECT {_SUMS_SQL} FROM requests WHERE {where}", params).fetchone())
    keys = [GROUPS[g] for g in query.group_by]
    if query.bucket is not None:
        seconds = BUCKETS[query.bucket]
        keys.insert(0, f"CAST(ts / {seconds} AS INTEGER) * {seconds}")
    listed = ", ".join(keys)
    first = "1 ASC, " if query.bucket else ""  # time buckets in order; within one, the biggest users first
    sql = (
        f"SELECT {listed}, {_SUMS_SQL} FROM requests WHERE {where} GROUP BY {listed} "
        f"ORDER BY {first}SUM(prompt_tokens + completion_tokens) DESC, {listed}"
    )
    rows: list[JsonDict] = []
    for values in conn.execute(sql, params):
        row: JsonDict = {}
        rest = list(values)
        if query.bucket is not None:
            row["bucket"] = _iso(rest.pop(0))
        for name in query.group_by:
            row[name] = rest.pop(0)
        rows.append({**row, **_sums(tuple(rest))})
    return totals, rows


def _read(path: Path, query: UsageQuery, since: float, until: float) -> tuple[JsonDict, list[JsonDict]]:
    conn = sqlite3.connect(str(path), timeout=10.0)
    try:
        return usage_rows(conn, query, since, until)
    finally:
        conn.close()


async def usage(store: AnalyticsStore, query: UsageQuery, *, now: float | None = None) -> JsonDict:
    """``query`` over the last window, as ``/api/v1/usage`` answers it."""
    until = time.time() if now is None else float(now)
    since = until - WINDOWS[query.window]
    await store.flush()
    totals, rows = await asyncio.to_thread(_read, store.path, query, since, until)
    return {
        "window": query.window,
        "since": since,
        "until": until,
        "tenant": query.tenant,
        "group_by": list(query.group_by),
        "bucket": query.bucket,
        "totals": totals,
        "rows": rows,
    }
