"""Where the response cache keeps its entries: the ``CacheStore`` protocol and the in-process store.

``MemoryStore`` is an LRU bounded by entries and by bytes, with a time-to-live per entry read from an
injectable clock. Its semantic index (``VectorIndex``) keeps, per context key, a matrix of unit vectors
(float32) and the entry keys they belong to: the nearest neighbour is one matrix-vector product (cosine on
normalised vectors). Vectors of evicted, expired or deleted entries are marked dead at once (one row zeroed)
and the matrix is compacted once half of it is dead. A context of ``OFFLOAD_ROWS`` vectors or more is searched
in a worker thread, from a snapshot (100,000 384-dim vectors take milliseconds). The Redis store shared by
gateway replicas is in ``cache_redis.py``; replaying an entry as a stream is in ``cache_replay.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:  # numpy is imported by the semantic index's first use, not at start-up (bench/coldstart.py)
    import numpy as np

ENTRY_OVERHEAD = 256
"""Bytes counted per entry on top of its body, model and tenant (the key, the bookkeeping)."""
OFFLOAD_ROWS = 16_384
"""From this many vectors in a context a search runs in a worker thread (numpy releases the GIL)."""
_SWEEP_EVERY = 256
"""Puts between two sweeps of expired entries (they also go when read or evicted)."""

Vector: TypeAlias = "Sequence[float] | np.ndarray"
JsonDict = dict[str, Any]
_Snapshot: TypeAlias = "tuple[np.ndarray, np.ndarray | None, list[str | None]]"


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached answer: the engine's final non-streamed response (JSON bytes) and what it belongs to."""

    body: bytes
    model: str
    tenant: str
    kind: str
    """``chat`` or ``generate`` (how to replay it as a stream)."""
    created: float
    """Wall-clock time (epoch seconds) of the engine's answer."""

    @property
    def size(self) -> int:
        return len(self.body) + len(self.model) + len(self.tenant) + ENTRY_OVERHEAD


class CacheStore(Protocol):
    """Entries by key, a time-to-live each, bounded; plus the semantic index. Never raises for its backend
    being down: a store that cannot answer reports a miss (``None``, ``False``, ``0``) and counts an error."""

    async def get(self, key: str) -> Entry | None: ...

    async def put(self, key: str, entry: Entry, ttl: float | None = None) -> bool:
        """Store (replacing any entry of that key); False when it was not stored (too large, backend down)."""
        ...

    async def delete_matching(self, tenant: str | None = None, model: str | None = None) -> int:
        """Delete the entries of ``tenant`` and/or ``model`` (every entry when both are None); how many."""
        ...

    async def add_vector(self, context_key: str, vector: Vector, key: str) -> None: ...

    async def nearest(self, context_key: str, vector: Vector) -> tuple[str, float] | None:
        """The key whose vector is nearest (cosine) among those of ``context_key``, and the similarity."""
        ...

    async def discard_vector(self, context_key: str, key: str) -> None:
        """Forget the vector of ``key`` (its entry is gone)."""
        ...

    async def stats(self) -> dict[str, int]:
        """entries, bytes, evictions, errors (at least)."""
        ...

    async def close(self) -> None: ...


def unit(vector: Vector) -> np.ndarray | None:
    """The vector as float32 of norm 1; None when it is empty, zero or not finite."""
    import numpy as np

    arr = np.asarray(vector, dtype=np.float32).reshape(-1)
    if arr.size == 0:
        return None
    norm = float(np.linalg.norm(arr))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    return arr / norm


class _Context:
    """The vectors of one context key: rows ``[0, n)`` of ``matrix``; dead rows are zero and not alive."""

    __slots__ = ("alive", "dead", "dim", "head", "keys", "matrix", "n", "rows")

    def __init__(self, dim: int) -> None:
        import numpy as np

        self.dim = dim
        self.matrix = np.zeros((16, dim), dtype=np.float32)
        self.alive = np.zeros(16, dtype=bool)
        self.keys: list[str | None] = []
        self.rows: dict[str, int] = {}
        self.n = 0
        self.dead = 0
        self.head = 0
        """No live row below this one (where the oldest live vector is looked for)."""

    @property
    def live(self) -> int:
        return self.n - self.dead

    def append(self, key: str, vec: np.ndarray) -> None:
        import numpy as np

        if self.n == len(self.matrix):
            grown = max(16, 2 * len(self.matrix))
            matrix = np.zeros((grown, self.dim), dtype=np.float32)
            matrix[: self.n] = self.matrix[: self.n]
            alive = np.zeros(grown, dtype=bool)
            alive[: self.n] = self.alive[: self.n]
            self.matrix, self.alive = matrix, alive
        self.matrix[self.n] = vec
        self.alive[self.n] = True
        self.keys.append(key)
        self.rows[key] = self.n
        self.n += 1

    def kill(self, key: str) -> None:
        row = self.rows.pop(key, None)
        if row is None:
            return
        self.matrix[row] = 0.0
        self.alive[row] = False
        self.keys[row] = None
        self.dead += 1
        if self.dead > 32 and self.dead * 2 > self.n:
            self.compact()

    def oldest(self) -> str | None:
        while self.head < self.n and not self.alive[self.head]:
            self.head += 1
        return self.keys[self.head] if self.head < self.n else None

    def compact(self) -> None:
        import numpy as np

        keep = np.flatnonzero(self.alive[: self.n])
        size = max(16, len(keep) * 2)
        matrix = np.zeros((size, self.dim), dtype=np.float32)
        matrix[: len(keep)] = self.matrix[keep]
        alive = np.zeros(size, dtype=bool)
        alive[: len(keep)] = True
        self.keys = [self.keys[i] for i in keep]
        self.rows = {key: i for i, key in enumerate(self.keys) if key is not None}
        self.matrix, self.alive = matrix, alive
        self.n, self.dead, self.head = len(keep), 0, 0

    def snapshot(self) -> _Snapshot:
        """What a search reads, safe to search in another thread while this context changes: appends write
        past ``n``, growth and compaction make new arrays, a discarded row only turns to zeros and None."""
        return self.matrix[: self.n], self.alive[: self.n] if self.dead else None, self.keys


def search(snapshot: _Snapshot, vec: np.ndarray) -> tuple[str, float] | None:
    """The nearest row of a context snapshot to the unit vector ``vec``: its key and cosine similarity."""
    import numpy as np

    matrix, alive, keys = snapshot
    if matrix.shape[0] == 0:
        return None
    sims = matrix @ vec
    if alive is not None:
        sims[~alive] = -np.inf
    row = int(np.argmax(sims))
    key = keys[row]
    return None if key is None or not np.isfinite(sims[row]) else (key, float(sims[row]))


class VectorIndex:
    """Unit vectors per context key, searched by one matrix-vector product. ``max_per_context`` keeps the
    newest vectors of a context (None: no bound of its own; the store's entry bound applies)."""

    def __init__(self, max_per_context: int | None = None) -> None:
        self.max_per_context = max_per_context
        self._contexts: dict[str, _Context] = {}
        self._where: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._where)

    def add(self, context_key: str, vector: Vector, key: str) -> None:
        vec = unit(vector)
        if vec is None:
            return
        self.discard(key)
        ctx = self._contexts.get(context_key)
        if ctx is not None and ctx.dim != vec.shape[0]:  # another embedding model: start the context again
            for old in list(ctx.rows):
                self._where.pop(old, None)
            ctx = None
        if ctx is None:
            ctx = self._contexts[context_key] = _Context(vec.shape[0])
        ctx.append(key, vec)
        self._where[key] = context_key
        if self.max_per_context is not None:
            while ctx.live > self.max_per_context and (oldest := ctx.oldest()) is not None:
                self.discard(oldest)

    def discard(self, key: str) -> None:
        context_key = self._where.pop(key, None)
        if context_key is None:
            return
        ctx = self._contexts[context_key]
        ctx.kill(key)
        if ctx.live == 0:
            del self._contexts[context_key]

    def prepare(self, context_key: str, vector: Vector) -> tuple[_Snapshot, np.ndarray] | None:
        """A snapshot of the context and the unit query vector, for ``search``; None when nothing to search."""
        ctx = self._contexts.get(context_key)
        vec = unit(vector)
        if ctx is None or vec is None or vec.shape[0] != ctx.dim or ctx.live == 0:
            return None
        return ctx.snapshot(), vec

    def nearest(self, context_key: str, vector: Vector) -> tuple[str, float] | None:
        prepared = self.prepare(context_key, vector)
        return None if prepared is None else search(*prepared)

    def clear(self) -> None:
        self._contexts.clear()
        self._where.clear()


class MemoryStore:
    """``CacheStore`` in this process: LRU bounded by ``max_entries`` and ``max_bytes``, ``ttl_seconds`` per
    entry on ``clock`` (monotonic seconds by default; tests inject their own)."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        ttl_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_vectors_per_context: int | None = None,
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or ttl_seconds <= 0:
            raise ValueError("max_entries, max_bytes and ttl_seconds must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.index = VectorIndex(max_vectors_per_context)
        self._entries: OrderedDict[str, tuple[Entry, float]] = OrderedDict()
        self._bytes = 0
        self._puts = 0
        self.evictions = 0
        self.expired = 0

    def _drop(self, key: str) -> Entry:
        entry, _ = self._entries.pop(key)
        self._bytes -= entry.size
        self.index.discard(key)
        return entry

    def _sweep(self) -> None:
        now = self.clock()
        for key in [k for k, (_, expires) in self._entries.items() if expires <= now]:
            self._drop(key)
            self.expired += 1

    async def get(self, key: str) -> Entry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        entry, expires = found
        if expires <= self.clock():
            self._drop(key)
            self.expired += 1
            return None
        self._entries.move_to_end(key)
        return entry

    async def put(self, key: str, entry: Entry, ttl: float | None = None) -> bool:
        if entry.size > self.max_bytes:
            return False
        self._puts += 1
        if self._puts % _SWEEP_EVERY == 0:
            self._sweep()
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (entry, self.clock() + (ttl if ttl is not None else self.ttl_seconds))
        self._bytes += entry.size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest, (_, expires) = next(iter(self._entries.items()))
            self._drop(oldest)
            if expires <= self.clock():
                self.expired += 1
            else:
                self.evictions += 1
        return True

    async def delete_matching(self, tenant: str | None = None, model: str | None = None) -> int:
        doomed = [
            key
            for key, (entry, _) in self._entries.items()
            if (tenant is None or entry.tenant == tenant) and (model is None or entry.model == model)
        ]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    async def add_vector(self, context_key: str, vector: Vector, key: str) -> None:
        if key in self._entries:  # a vector only for an entry that is here
            self.index.add(context_key, vector, key)

    async def nearest(self, context_key: str, vector: Vector) -> tuple[str, float] | None:
        prepared = self.index.prepare(context_key, vector)
        if prepared is None:
            return None
        if prepared[0][0].shape[0] >= OFFLOAD_ROWS:  # milliseconds of numpy: not on the event loop
            return await asyncio.to_thread(search, *prepared)
        return search(*prepared)

    async def discard_vector(self, context_key: str, key: str) -> None:
        self.index.discard(key)

    async def stats(self) -> dict[str, int]:
        self._sweep()
        return {
            "entries": len(self._entries),
            "bytes": self._bytes,
            "evictions": self.evictions,
            "expired": self.expired,
            "vectors": len(self.index),
            "errors": 0,
        }

    async def close(self) -> None:
        self._entries.clear()
        self.index.clear()
        self._bytes = 0
