"""One SQLite connection owned by one thread: what every store on a SQLite file shares (analytics, stored
responses, agents).

``start`` opens the connection in the worker's own thread (``connect``, by default ``open_database``: the schema
applied, then ``migrate``); ``run(fn)`` runs ``fn(connection)`` in that thread and awaits its result, so the event
loop never touches the file; ``close`` closes the connection in that thread and ends it. Calls run one at a time,
in the order they were made. A worker closed can be started again; ``close`` twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from shared_ollama.service.observability.sqlite_db import open_database

T = TypeVar("T")


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class _State(enum.Enum):
    NEW = "not started"
    RUNNING = "running"
    CLOSED = "closed"


class SqliteWorker(Generic[C]):
    """A connection to ``path`` and the single thread that uses it; ``name`` names it in errors and thread names."""

    def __init__(
        self,
        path: Path,
        schema: Iterable[str],
        *,
        wal: bool = False,
        migrate: Callable[[C], None] | None = None,
        connect: Callable[..., C] = open_database,  # type: ignore[assignment]
        name: str = "sqlite worker",
    ) -> None:
        self.path = Path(path)
        self.schema = tuple(schema)
        self.wal = wal
        self.name = name
        self._migrate = migrate
        self._connect = connect
        self._state = _State.NEW
        self._executor: ThreadPoolExecutor | None = None
        self._conn: C | None = None
        """Created, used and closed only in the worker's thread."""

    @property
    def running(self) -> bool:
        return self._state is _State.RUNNING

    async def start(self, then: Callable[[C], object] | None = None) -> None:
        """Open the connection in a new thread, then run ``then`` there (a purge, say). Raises what opening or
        ``then`` raised (the connection and thread are then closed again)."""
        if self._state is _State.RUNNING:
            raise RuntimeError(f"{self.name} is already started")
        prefix = "".join(ch if ch.isalnum() else "-" for ch in self.name)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=prefix)
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._open)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor
        self._state = _State.RUNNING
        if then is not None:
            try:
                await self.run(then)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.close()
                raise

    async def run(self, fn: Callable[[C], T]) -> T:
        """``fn(connection)`` in the worker's thread, after every call made before it."""
        if self._state is not _State.RUNNING or self._executor is None:
            raise RuntimeError(f"{self.name} is {self._state.value}")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    async def close(self) -> None:
        """Close the connection (after the calls already made) and end the thread. Calls made later raise."""
        if self._state is not _State.RUNNING or self._executor is None:
            return
        executor, self._executor = self._executor, None
        self._state = _State.CLOSED
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_conn)
        finally:
            executor.shutdown(wait=False)

    # --- the worker's thread

    def _open(self) -> None:
        self._conn = self._connect(self.path, self.schema, wal=self.wal, migrate=self._migrate)

    def _call(self, fn: Callable[[C], T]) -> T:
        if self._conn is None:  # pragma: no cover - run() checks the state first
            raise RuntimeError(f"{self.name} has no open connection")
        return fn(self._conn)

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def rows_as_dicts(cursor: Any) -> list[dict[str, Any]]:
    """A cursor's remaining rows as dicts keyed by column name."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]
