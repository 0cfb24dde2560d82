"""The response cache: ``ResponseCache`` over a store (memory or Redis), with exact and semantic lookups.

What is cached is the engine's final answer to a chat or generate request (the non-streamed JSON; a stream is
replayed from it, so streamed and non-streamed requests share entries). Keys are ``keys.py``'s, the mode is
``policy.py``'s. Only requests made in ``semantic`` mode index a vector. Store and embedder failures are misses.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from shared_ollama.protocol.names import canonical_model
from shared_ollama.service.cache.keys import SCOPES, cache_key, context_key, message_count, path_kind, semantic_text
from shared_ollama.service.cache.memory_store import CacheStore, Entry, MemoryStore
from shared_ollama.service.cache.policy import CACHE_HEADER, decide
from shared_ollama.service.cache.replay import aggregate_ndjson, replay_ndjson

__all__ = [
    "CACHE_HEADER",
    "CacheConfig",
    "CacheStore",
    "Entry",
    "Hit",
    "MemoryStore",
    "ResponseCache",
    "aggregate_ndjson",
    "cache_key",
    "context_key",
    "decide",
    "make_store",
    "replay_ndjson",
]
log = logging.getLogger(__name__)
JsonDict = dict[str, Any]
Embed = Callable[[str], Awaitable[list[float]]]

CACHEABLE_DONE = frozenset({"stop", "length"})
"""``done_reason`` of answers worth keeping (not ``load``/``unload``, not missing)."""
_EMBEDDINGS_KEPT = 256


@dataclass(frozen=True, slots=True)
class CacheConfig:
    enabled: bool = True
    ttl_seconds: float = 3600.0
    max_entries: int = 10_000
    max_bytes: int = 256 * 1024 * 1024
    scope: str = "tenant"
    semantic_threshold: float = 0.95
    semantic_max_messages: int = 8
    embed_timeout: float = 2.0
    redis_url: str | None = None
    semantic_max_candidates: int = 5000
    """Vectors kept per context key in Redis (the newest); in memory the entry bound applies."""

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"cache scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")


def make_store(config: CacheConfig) -> CacheStore:
    """Redis when ``redis_url`` is set (shared by the replicas), else this process's memory."""
    if config.redis_url:
        from shared_ollama.service.cache.redis_store import RedisStore

        return RedisStore(
            config.redis_url,
            ttl_seconds=config.ttl_seconds,
            max_entries=config.max_entries,
            max_bytes=config.max_bytes,
            max_vectors_per_context=config.semantic_max_candidates,
        )
    return MemoryStore(config.max_entries, config.max_bytes, config.ttl_seconds)


# --- the cache


@dataclass(frozen=True, slots=True)
class Hit:
    key: str
    entry: Entry
    mode: str
    """``exact`` or ``semantic``."""
    similarity: float = 1.0

    @property
    def body(self) -> bytes:
        """The cached answer as the engine sent it (a non-streamed response)."""
        return self.entry.body

    def ndjson(self, pieces: int = 4) -> list[bytes]:
        return replay_ndjson(orjson.loads(self.entry.body), self.entry.kind, pieces)


class ResponseCache:
    """Lookups and stores for the gateway. Never raises for the store or the embedder: those are misses."""

    def __init__(self, config: CacheConfig, store: CacheStore, embed: Embed | None = None) -> None:
        self.config = config
        self.backend = store
        self.embed = embed
        self._embeddings: OrderedDict[str, list[float]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.semantic_hits = 0
        self.stores = 0
        self.errors = 0
        self.embed_errors = 0

    def _keys(self, request: JsonDict, tenant: str, model_digest: str | None, context: bool) -> str | None:
        fn = context_key if context else cache_key
        try:
            return fn(request, tenant=tenant, scope=self.config.scope, model_digest=model_digest)
        except TypeError as exc:  # not JSON orjson can write (an integer past 64 bits ...): not cacheable
            self.errors += 1
            log.warning("response cache: no key for this request: %s", exc)
            return None

    async def _safe(self, what: str, call: Awaitable[Any], default: Any) -> Any:
        try:
            return await call
        except Exception:  # a cache must not fail the request
            self.errors += 1
            log.exception("response cache: %s failed; treated as a miss", what)
            return default

    def _semantic_text(self, request: JsonDict) -> str | None:
        if self.embed is None or message_count(request) > self.config.semantic_max_messages:
            return None
        return semantic_text(request)

    async def _vector(self, text: str) -> list[float] | None:
        digest = hashlib.sha256(text.encode()).hexdigest()
        if (known := self._embeddings.get(digest)) is not None:
            self._embeddings.move_to_end(digest)
            return known
        assert self.embed is not None
        try:
            async with asyncio.timeout(self.config.embed_timeout):
                vector = list(await self.embed(text))
        except Exception as exc:  # timeout or embedder failure: a miss
            self.embed_errors += 1
            log.warning("response cache: embedding failed (%s); semantic lookup skipped", exc.__class__.__name__)
            return None
        self._embeddings[digest] = vector
        if len(self._embeddings) > _EMBEDDINGS_KEPT:
            self._embeddings.popitem(last=False)
        return vector

    async def lookup(self, request: JsonDict, tenant: str, mode: str, model_digest: str | None = None) -> Hit | None:
        if not self.config.enabled or mode == "off":
            return None
        key = self._keys(request, tenant, model_digest, False)
        if key is None:
            self.misses += 1
            return None
        entry = await self._safe("get", self.backend.get(key), None)
        if entry is not None:
            self.hits += 1
            return Hit(key, entry, "exact")
        if mode == "semantic" and (hit := await self._semantic(request, tenant, model_digest)) is not None:
            self.hits += 1
            self.semantic_hits += 1
            return hit
        self.misses += 1
        return None

    async def _semantic(self, request: JsonDict, tenant: str, model_digest: str | None) -> Hit | None:
        text = self._semantic_text(request)
        vector = await self._vector(text) if text is not None else None
        if vector is None:
            return None
        ctx = self._keys(request, tenant, model_digest, True)
        if ctx is None:
            return None
        for _ in range(3):  # a neighbour whose entry is gone is forgotten, then the next one is tried
            found = await self._safe("nearest", self.backend.nearest(ctx, vector), None)
            if found is None or found[1] < self.config.semantic_threshold:
                return None
            key, similarity = found
            entry = await self._safe("get", self.backend.get(key), None)
            if entry is not None:
                return Hit(key, entry, "semantic", similarity)
            await self._safe("discard", self.backend.discard_vector(ctx, key), None)
        return None

    async def store(
        self, request: JsonDict, tenant: str, mode: str, model_digest: str | None, response_json: bytes
    ) -> bool:
        """Keep a successful final answer; False when it is not kept (mode off, not a finished answer ...)."""
        if not self.config.enabled or mode == "off":
            return False
        try:
            final = orjson.loads(response_json)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(final, dict) or final.get("error") or final.get("done") is not True:
            return False
        if final.get("done_reason") not in CACHEABLE_DONE:
            return False
        key = self._keys(request, tenant, model_digest, False)
        if key is None:
            return False
        kind = path_kind(request)
        entry = Entry(response_json, canonical_model(str(request.get("model") or "")), tenant, kind, time.time())
        if not await self._safe("put", self.backend.put(key, entry), False):
            return False
        self.stores += 1
        if mode == "semantic" and (text := self._semantic_text(request)) is not None:
            vector = await self._vector(text)
            ctx = self._keys(request, tenant, model_digest, True)
            if vector is not None and ctx is not None:
                await self._safe("add_vector", self.backend.add_vector(ctx, vector, key), None)
        return True

    async def purge(self, tenant: str | None = None, model: str | None = None) -> int:
        """Delete the entries of a tenant and/or a model (every entry when both are None). In the ``shared``
        scope an entry belongs to the tenant whose request stored it."""
        named = canonical_model(model) if model else None
        return int(await self._safe("purge", self.backend.delete_matching(tenant=tenant, model=named), 0))

    async def stats(self) -> dict[str, int | float]:
        store = await self._safe("stats", self.backend.stats(), {})
        looked = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "semantic_hits": self.semantic_hits,
            "hit_rate": self.hits / looked if looked else 0.0,
            "stores": self.stores,
            "entries": int(store.get("entries", 0)),
            "bytes": int(store.get("bytes", 0)),
            "evictions": int(store.get("evictions", 0)),
            "errors": self.errors + int(store.get("errors", 0)),
            "embed_errors": self.embed_errors,
        }

    async def close(self) -> None:
        await self._safe("close", self.backend.close(), None)
