"""Agents' documents: text cut into passages, each embedded and stored with its vector for semantic search.

The vectors live in ``sqlite-vec`` ``vec0`` tables (cosine distance, KNN in SQL with ``MATCH ... AND k = ?``),
one table per dimension (``vec_chunks_<dim>``, created on first use), partitioned by (tenant, agent) so a search
only ever reads one agent's passages. An agent's documents all have the dimension of its first one: a document
embedded by a model of another dimension is refused, as the embedding model must have changed. The file is its
own (``<data_dir>/agents_vectors.sqlite3``): it is opened with ``pysqlite3`` (this Python's ``sqlite3`` cannot
load extensions), and two SQLite libraries in one process must not share a file, whose locks they would not
see. Every sqlite call runs in the store's ``SqliteWorker`` thread; ``embed`` runs on the event loop.
"""

from __future__ import annotations

import importlib.util
import math
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pysqlite3.dbapi2 as sqlite3

from shared_ollama.errors import BackendError, InvalidRequest
from shared_ollama.service.agents.chunking import chunk_text
from shared_ollama.service.agents.tooling import Hit
from shared_ollama.service.observability.sqlite_db import open_database, write_transaction
from shared_ollama.service.observability.sqlite_worker import SqliteWorker

JsonDict = dict[str, Any]
Embed = Callable[[list[str]], Awaitable[list[list[float]]]]

EMBED_BATCH = 32
"""Passages per call of ``embed``."""
MAX_K = 100
"""The most passages one search returns."""
MAX_TITLE_CHARS = 200
MAX_DIMENSION = 8192
"""The largest vector sqlite-vec is asked to store."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS documents (document_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, agent TEXT NOT NULL, "
    "title TEXT NOT NULL, chars INTEGER NOT NULL, chunks INTEGER NOT NULL, dimension INTEGER NOT NULL, "
    "created_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS documents_owner ON documents (tenant, agent, created_at)",
    "CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, document_id TEXT NOT NULL, seq INTEGER NOT NULL, "
    "text TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS chunks_document ON chunks (document_id)",
)


def open_vector_database(
    path: Path,
    schema: Iterable[str],
    *,
    wal: bool = False,
    migrate: Callable[[sqlite3.Connection], None] | None = None,
) -> sqlite3.Connection:
    """``open_database`` through ``pysqlite3``, then the sqlite-vec extension loaded (closed again if that fails)."""
    conn = open_database(path, schema, wal=wal, migrate=migrate, driver=sqlite3.connect)
    try:
        conn.enable_load_extension(True)
        conn.load_extension(_vec_extension())
        conn.enable_load_extension(False)
    except BaseException:
        conn.close()
        raise
    return conn


def _vec_extension() -> str:
    """The sqlite-vec package's loadable extension, found without importing the package (whose import takes numpy
    along when it is installed: a tenth of a second of every start-up, bench/coldstart.py)."""
    spec = importlib.util.find_spec("sqlite_vec")
    if spec is None or spec.origin is None:
        raise BackendError("the sqlite-vec package is not installed")
    return str(Path(spec.origin).parent / "vec0")


def _float32(vector: Sequence[float]) -> bytes:
    """A vector as sqlite-vec reads it: packed native float32 values."""
    return struct.pack(f"{len(vector)}f", *vector)


def _owner(tenant: str, agent: str) -> str:
    """The partition key of one agent's passages (a JSON pair: no separator two names could forge)."""
    return orjson.dumps([tenant, agent]).decode()


def _vec_table(dimension: int) -> str:
    return f"vec_chunks_{int(dimension)}"


def _title(text: str, title: str | None) -> str:
    if title is not None:
        if not title.strip():
            raise InvalidRequest("title must not be blank", param="title")
        if len(title) > MAX_TITLE_CHARS:
            raise InvalidRequest(f"title is over {MAX_TITLE_CHARS} characters", param="title")
        return title.strip()
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first_line[:80]


def _checked_vectors(vectors: Any, count: int) -> list[list[float]]:
    """The embedder's answer for ``count`` passages, or ``BackendError`` saying what is wrong with it."""
    if not isinstance(vectors, list) or len(vectors) != count:
        got = len(vectors) if isinstance(vectors, list) else type(vectors).__name__
        raise BackendError(f"the embedding model returned {got} vectors for {count} passages")
    checked: list[list[float]] = []
    for vector in vectors:
        if not isinstance(vector, list | tuple) or not 1 <= len(vector) <= MAX_DIMENSION:
            raise BackendError("the embedding model returned an empty or malformed vector")
        try:
            floats = [float(x) for x in vector]
        except (TypeError, ValueError):
            raise BackendError("the embedding model returned a vector with a non-number in it") from None
        if not all(math.isfinite(x) for x in floats) or not any(floats):
            raise BackendError("the embedding model returned a zero or non-finite vector")
        checked.append(floats)
    if len({len(v) for v in checked}) > 1:
        raise BackendError("the embedding model returned vectors of different dimensions")
    return checked


class Documents:
    """Agents' documents and their vectors; ``start`` before use, ``close`` at shutdown."""

    def __init__(
        self,
        path: Path,
        *,
        chunk_chars: int = 800,
        overlap: int = 100,
        max_document_chars: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if chunk_chars < 1 or not 0 <= overlap < chunk_chars or max_document_chars < 1:
            raise ValueError("chunk_chars and max_document_chars must be >= 1 and 0 <= overlap < chunk_chars")
        self.path = Path(path)
        self.chunk_chars = chunk_chars
        self.overlap = overlap
        self.max_document_chars = max_document_chars
        self._clock = clock
        self._worker = SqliteWorker(self.path, _SCHEMA, wal=True, connect=open_vector_database, name="agent documents")

    async def start(self) -> None:
        await self._worker.start()

    async def close(self) -> None:
        await self._worker.close()

    # --- operations

    async def add(self, tenant: str, agent: str, text: str, *, title: str | None, embed: Embed) -> JsonDict:
        """Cut ``text`` into passages, embed them (``embed``, at most 32 at a time) and store them:
        ``{document_id, title, chunks, chars}``. ``InvalidRequest`` for blank or over-long text, and for a
        document whose vectors' dimension differs from the agent's other documents'."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest("text must be a non-empty string", param="text")
        if len(text) > self.max_document_chars:
            raise InvalidRequest(
                f"text is {len(text)} characters, over the limit of {self.max_document_chars}", param="text"
            )
        name = _title(text, title)
        passages = chunk_text(text, chunk_chars=self.chunk_chars, overlap=self.overlap)
        vectors: list[list[float]] = []
        for start in range(0, len(passages), EMBED_BATCH):
            batch = passages[start : start + EMBED_BATCH]
            vectors.extend(_checked_vectors(await embed(batch), len(batch)))
        if len({len(v) for v in vectors}) > 1:
            raise BackendError("the embedding model returned vectors of different dimensions")
        document = {
            "document_id": f"doc_{uuid.uuid4().hex}",
            "title": name,
            "chunks": len(passages),
            "chars": len(text),
        }
        await self._worker.run(
            partial(
                self._add,
                tenant=tenant,
                agent=agent,
                document=document,
                passages=passages,
                vectors=vectors,
                now=self._clock(),
            )
        )
        return document

    async def search(self, tenant: str, agent: str, query_vector: Sequence[float], k: int = 4) -> list[Hit]:
        """The ``k`` passages of the agent's documents closest to ``query_vector`` (best first; score = 1 -
        cosine distance); [] when the agent has none."""
        if not 1 <= k <= MAX_K:
            raise InvalidRequest(f"k must be between 1 and {MAX_K} (got {k})", param="k")
        query = _checked_vectors([list(query_vector)], 1)[0]
        return await self._worker.run(partial(self._search, tenant=tenant, agent=agent, query=query, k=k))

    async def list(self, tenant: str, agent: str) -> list[JsonDict]:
        """The agent's documents, oldest first: ``{document_id, title, chunks, chars, created_at}``."""
        return await self._worker.run(partial(self._list, tenant=tenant, agent=agent))

    async def delete(self, tenant: str, agent: str, document_id: str) -> bool:
        """Delete one of the agent's documents; whether there was one."""
        return await self._worker.run(partial(self._delete, tenant=tenant, agent=agent, document_id=document_id))

    async def delete_agent(self, tenant: str, agent: str) -> int:
        """Delete every document of the agent; how many."""
        return await self._worker.run(partial(self._delete_agent, tenant=tenant, agent=agent))

    async def count(self, tenant: str, agent: str) -> int:
        return await self._worker.run(partial(self._count, tenant=tenant, agent=agent))

    # --- the store's thread (everything below runs there, never on the event loop)

    @staticmethod
    def _dimension(conn: sqlite3.Connection, tenant: str, agent: str) -> int | None:
        row = conn.execute(
            "SELECT dimension FROM documents WHERE tenant = ? AND agent = ? LIMIT 1", (tenant, agent)
        ).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _transaction(conn: sqlite3.Connection, work: Callable[[], Any]) -> Any:
        with write_transaction(conn):
            return work()

    def _add(
        self,
        conn: sqlite3.Connection,
        *,
        tenant: str,
        agent: str,
        document: JsonDict,
        passages: list[str],
        vectors: list[list[float]],
        now: float,
    ) -> None:
        dimension = len(vectors[0])
        have = self._dimension(conn, tenant, agent)
        if have is not None and have != dimension:
            raise InvalidRequest(
                f"this document's embeddings have {dimension} dimensions but the agent's other documents have "
                f"{have}: the embedding model changed since they were added; delete them (or the agent) first",
                param="text",
            )
        table = _vec_table(dimension)
        owner = _owner(tenant, agent)

        def work() -> None:
            conn.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING vec0(owner TEXT PARTITION KEY, "
                f"embedding float[{dimension}] distance_metric=cosine)"
            )
            conn.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (document["document_id"], tenant, agent, document["title"], document["chars"], len(passages),
                 dimension, now),
            )  # fmt: skip
            for seq, (passage, vector) in enumerate(zip(passages, vectors, strict=True)):
                cursor = conn.execute(
                    "INSERT INTO chunks (document_id, seq, text) VALUES (?, ?, ?)",
                    (document["document_id"], seq, passage),
                )
                conn.execute(
                    f"INSERT INTO {table} (rowid, owner, embedding) VALUES (?, ?, ?)",
                    (cursor.lastrowid, owner, _float32(vector)),
                )

        self._transaction(conn, work)

    def _search(self, conn: sqlite3.Connection, *, tenant: str, agent: str, query: list[float], k: int) -> list[Hit]:
        have = self._dimension(conn, tenant, agent)
        if have is None:
            return []
        if have != len(query):
            raise InvalidRequest(
                f"the query's embedding has {len(query)} dimensions but the agent's documents have {have}: "
                "the embedding model changed since they were added",
                param="query",
            )
        rows = conn.execute(
            f"WITH knn AS (SELECT rowid, distance FROM {_vec_table(have)} "
            "WHERE embedding MATCH ? AND k = ? AND owner = ?) "
            "SELECT c.document_id, d.title, c.text, knn.distance FROM knn "
            "JOIN chunks c ON c.id = knn.rowid JOIN documents d ON d.document_id = c.document_id "
            "ORDER BY knn.distance, c.id",
            (_float32(query), k, _owner(tenant, agent)),
        ).fetchall()
        return [
            Hit(document_id=doc, title=title, text=text, score=round(1.0 - float(distance), 6))
            for doc, title, text, distance in rows
        ]

    def _list(self, conn: sqlite3.Connection, *, tenant: str, agent: str) -> list[JsonDict]:
        rows = conn.execute(
            "SELECT document_id, title, chunks, chars, created_at FROM documents WHERE tenant = ? AND agent = ? "
            "ORDER BY created_at, rowid",
            (tenant, agent),
        )
        names = ("document_id", "title", "chunks", "chars", "created_at")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def _remove(self, conn: sqlite3.Connection, document_id: str, dimension: int) -> None:
        conn.execute(
            f"DELETE FROM {_vec_table(dimension)} WHERE rowid IN (SELECT id FROM chunks WHERE document_id = ?)",
            (document_id,),
        )
        conn.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
        conn.execute("DELETE FROM documents WHERE document_id = ?", (document_id,))

    def _delete(self, conn: sqlite3.Connection, *, tenant: str, agent: str, document_id: str) -> bool:
        row = conn.execute(
            "SELECT dimension FROM documents WHERE document_id = ? AND tenant = ? AND agent = ?",
            (document_id, tenant, agent),
        ).fetchone()
        if row is None:
            return False
        self._transaction(conn, lambda: self._remove(conn, document_id, int(row[0])))
        return True

    def _delete_agent(self, conn: sqlite3.Connection, *, tenant: str, agent: str) -> int:
        rows = conn.execute(
            "SELECT document_id, dimension FROM documents WHERE tenant = ? AND agent = ?", (tenant, agent)
        ).fetchall()

        def work() -> None:
            for document_id, dimension in rows:
                self._remove(conn, document_id, int(dimension))

        self._transaction(conn, work)
        return len(rows)

    def _count(self, conn: sqlite3.Connection, *, tenant: str, agent: str) -> int:
        row = conn.execute("SELECT COUNT(*) FROM documents WHERE tenant = ? AND agent = ?", (tenant, agent)).fetchone()
        return int(row[0])
