"""Analytics shared by gateway replicas on different machines, through one Redis stream.

Replicas on one machine may share one SQLite file (``analytics_path``); replicas on different machines cannot (SQLite
over a network file system is not safe). So with ``redis_url`` every analytics store also publishes the rows it
writes to the stream ``analytics_stream`` (trimmed to about ``analytics_stream_records`` entries), and a follower
task writes the rows other stores published into its own file. Every replica's ``/api/v1/analytics`` and
``/api/v1/usage`` then count every replica's requests (another's a flush interval and a read later).

- **Nothing is lost to a stop or to Redis being down.** A row written here is queued for publishing in the file, in
  the transaction that writes it (table ``analytics_outbox``); the publisher sends the queue in order and removes
  what Redis took. Rows written while Redis is down, or before a stop or a crash, go out once it is back.
- **Nothing is counted twice.** An entry carries its store's id and its queue number, a key that never changes: an
  entry sent twice (an answer lost after Redis took it) or read by two replicas on one file is imported once
  (table ``analytics_imported``, in the transaction that inserts the row).
- A store's id lives in its file (table ``analytics_meta``): replicas sharing a file publish under one id and never
  import each other's rows (the file has them already).
- A follower resumes after the last entry its file read (kept in ``analytics_meta`` per stream), or reads the stream
  from its start for a new file: the history the stream still holds. Rows written before sharing was switched on
  are not published.
- Requests never wait for Redis; a bad entry is counted (``malformed``) and skipped, never stops the follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared_ollama.service.observability.analytics_rows import INT_LIMIT, mapped_row
from shared_ollama.service.observability.analytics_share_db import (
    Entry,
    claim_publishing,
    import_rows,
    outbox_batch,
    outbox_sent,
    outbox_size,
    release_publishing,
    store_identity,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
Run = Callable[[Callable[[sqlite3.Connection], T]], Awaitable[T]]


# --- on the event loop


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def stream_entries(answer: Any) -> list[Any]:
    """XREAD's entries for one stream, whichever reply shape the connection gives: RESP2's list of ``[name,
    entries]`` pairs, or RESP3's mapping of names to entries (with legacy replies, to a list holding them)."""
    if not answer:
        return []
    entries = next(iter(answer.values())) if isinstance(answer, dict) else answer[0][1]
    entries = list(entries or [])
    if len(entries) == 1 and isinstance(entries[0], list) and not _is_entry(entries[0]):
        entries = list(entries[0])
    return entries


def _is_entry(item: Any) -> bool:
    return isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], bytes | str)


def _field(fields: Any, name: str) -> Any:
    return fields.get(name.encode(), fields.get(name)) if isinstance(fields, dict) else None


class AnalyticsShare:
    """Publishes this store's rows to the stream and imports the other stores' rows from it."""

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        max_records: int,
        batch: int = 500,
        block_ms: int = 1000,
        retry: float = 1.0,
        drain: float = 5.0,
    ) -> None:
        self.stream = stream
        self.max_records = max_records
        self.batch = batch
        self.block_ms = block_ms
        self.retry = retry
        self.drain = drain
        """Seconds ``close`` spends publishing what is queued (the rest goes out after the next start)."""
        self.lease = retry * 15
        """Seconds this replica keeps the turn to publish its file's queue without renewing it (a replica that
        stopped without giving it up holds it this long)."""
        self._me = uuid.uuid4().hex
        # A read blocks up to block_ms: the socket waits longer than that before it counts as broken.
        self._client = Redis.from_url(url, socket_connect_timeout=5.0, socket_timeout=block_ms / 1000 + 5.0)
        self.store_id = ""
        self.position = "0-0"
        self._run: Run[Any] | None = None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._identified: asyncio.Task[None] | None = None
        """Reads the store's id and the follower's position once; both loops wait for it."""
        self._publisher: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._counts = {"published": 0, "read": 0, "imported": 0, "malformed": 0}
        self._failing: dict[str, bool] = {}

    async def start(self, run: Run[Any]) -> None:
        """Begin, with ``run`` running a function on the store's SQLite connection in its thread."""
        self._run = run
        self._identified = asyncio.create_task(self._identify(), name="analytics-identify")
        self._publisher = asyncio.create_task(self._publish_loop(), name="analytics-publisher")
        self._follower = asyncio.create_task(self._follow_loop(), name="analytics-follower")

    def written(self) -> None:
        """Rows were written (and queued): publish them soon. Never blocks, never raises."""
        self._wake.set()

    async def backlog(self) -> int:
        """Rows written here that Redis has not taken yet."""
        assert self._run is not None
        return int(await self._run(outbox_size))

    async def close(self) -> None:
        """Stop importing; publish what is queued for at most ``drain`` seconds (the rest stays queued in the file);
        close the connection. A cancellation of the caller is never swallowed."""
        self._closing.set()
        self._wake.set()
        try:
            if self._follower is not None:
                self._follower.cancel()
                await asyncio.wait({self._follower})
            if self._publisher is not None:
                done, _ = await asyncio.wait({self._publisher}, timeout=self.drain)
                if not done:
                    self._publisher.cancel()
                    await asyncio.wait({self._publisher})
                    log.warning("analytics: publishing to Redis unfinished at close; the rest goes out after a start")
            if self._run is not None:
                with contextlib.suppress(Exception):
                    await self._run(partial(release_publishing, me=self._me))
        finally:
            for task in (self._identified, self._publisher, self._follower):
                if task is not None:  # a close cancelled on the way still leaves no task behind
                    task.cancel()
            with contextlib.suppress(RedisError, OSError):
                await self._client.aclose()

    def stats(self) -> dict[str, Any]:
        return {"store": self.store_id, "stream": self.stream, "position": self.position, **self._counts}

    # --- both loops

    async def _identify(self) -> None:
        """The store's id and the follower's position, read once (retried while the file is busy)."""
        while True:
            assert self._run is not None
            try:
                self.store_id, self.position = await self._run(partial(store_identity, stream=self.stream))
                return
            except Exception as exc:  # the file busy past its timeout, say: rows stay queued meanwhile
                self._note("identify", exc)
                if self._closing.is_set():
                    log.warning("analytics: closed before the store's id could be read; its rows stay queued")
                    raise asyncio.CancelledError from exc
                await self._pause()

    async def _pause(self) -> None:
        """``retry`` seconds, or less when closing. (``asyncio.timeout``, not ``wait_for``: on Python 3.11 a
        ``wait_for`` whose inner wait is already done swallows the task's cancellation.)"""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.retry):
                await self._closing.wait()

    def _note(self, what: str, error: BaseException | None) -> None:
        """Log the start and the end of a run of failures, not every retry."""
        failing = self._failing.get(what, False)
        if error is not None and not failing:
            log.warning("analytics: sharing (%s) failed: %r; retrying every %g s", what, error, self.retry)
        elif error is None and failing:
            log.info("analytics: sharing (%s) works again", what)
        self._failing[what] = error is not None

    # --- publishing

    async def _until_identified(self) -> None:
        assert self._identified is not None
        await asyncio.shield(self._identified)  # a loop cancelled while it waits leaves the read to finish

    async def _publish_loop(self) -> None:
        await self._until_identified()
        while True:
            try:
                sent = await self._publish_some()
            except Exception as exc:  # Redis or the file: the rows stay queued; try again later
                self._note("publish", exc)
                if self._closing.is_set():
                    return
                await self._pause()
                continue
            self._note("publish", None)
            if sent:
                continue
            if self._closing.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.retry * 10):  # also a safety net for a missed wake-up
                    await self._wake.wait()
            self._wake.clear()

    async def _publish_some(self) -> int:
        assert self._run is not None
        queued = await self._run(partial(outbox_batch, limit=self.batch))
        if not queued:
            return 0
        if not await self._run(partial(claim_publishing, me=self._me, now=time.time(), lease=self.lease)):
            return 0  # another replica on this file publishes its queue, these rows included
        pipe = self._client.pipeline(transaction=False)
        for number, body in queued:
            fields = {"s": self.store_id, "o": number, "r": body}
            pipe.xadd(self.stream, fields, maxlen=self.max_records, approximate=True)  # type: ignore[arg-type]
        await pipe.execute()
        await self._run(partial(outbox_sent, upto=queued[-1][0]))
        self._counts["published"] += len(queued)
        return len(queued)

    # --- importing

    async def _follow_loop(self) -> None:
        await self._until_identified()
        while not self._closing.is_set():
            try:
                await self._follow_once()
            except Exception as exc:  # Redis or the file: the position stays; read again later
                self._note("follow", exc)
                await self._pause()
            else:
                self._note("follow", None)

    async def _follow_once(self) -> None:
        """One read of the stream after the position; the other stores' rows written, then the position moved."""
        answer = await self._client.xread({self.stream: self.position}, count=self.batch, block=self.block_ms)
        raw = stream_entries(answer)
        if not raw:
            return
        entries: list[Entry] = []
        malformed = 0
        last = self.position
        for item in raw:
            try:
                raw_id, fields = item
                last = _text(raw_id)
                origin = _text(_field(fields, "s") or "")
                if origin == self.store_id:
                    continue  # this file's own rows
                ref = int(_text(_field(fields, "o")))
                if not 0 <= ref < INT_LIMIT:
                    raise ValueError("queue number out of range")
                entries.append((last, origin, ref, mapped_row(orjson.loads(_field(fields, "r") or b""))))
            except (ValueError, TypeError, AttributeError, OverflowError):
                malformed += 1
        assert self._run is not None
        inserted, refused = await self._run(partial(import_rows, entries=entries, stream=self.stream, last=last))
        self.position = last
        self._counts["read"] += len(raw)
        self._counts["imported"] += inserted
        self._counts["malformed"] += malformed + refused
