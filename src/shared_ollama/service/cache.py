"""The response cache: keys and policy (pure functions), stream replay, and ``ResponseCache`` over a store.

What is cached is the engine's final answer to a chat or generate request (the non-streamed JSON; a stream is
replayed from it, so streamed and non-streamed requests share entries). The key covers everything in the
request that can change the answer: the model and its digest (a re-created model does not serve an old
answer), the messages (images by the SHA-256 of their base64 text), prompt, system, suffix, template, tools,
format, think, raw, context ... and the options except those that only change how the engine runs
(``RUNTIME_OPTIONS``), plus the tenant unless the scope is ``shared``. Fields are dropped from the key by
name (``NOT_IN_KEY``), not picked: a request field this module does not know still separates entries.

Policy (``decide``): an explicit mode (header ``X-Shared-Ollama-Cache``, else the body's ``cache``) wins;
otherwise only deterministic requests are cached (``temperature`` 0, or a ``seed`` >= 0 at any temperature).
``semantic`` also answers a request whose last user message is close enough (cosine of embeddings >=
``semantic_threshold``) to a cached one with the same context key: the same key with that message's text left
out (same model, options, earlier turns, images). Only requests made in ``semantic`` mode index a vector.
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

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.cache_replay import aggregate_ndjson, replay_ndjson
from shared_ollama.service.cache_store import CacheStore, Entry, MemoryStore

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

CACHE_HEADER = "X-Shared-Ollama-Cache"
MODES = ("off", "exact", "semantic")
SCOPES = ("tenant", "shared")
KEY_VERSION = 1
"""Changes when the key's layout does (old entries then simply stop matching)."""
NOT_IN_KEY = frozenset({"model", "stream", "keep_alive", "cache", "options", "messages", "images"})
"""Top-level fields that are not part of the key as they are (model, options, messages and images are, below)."""
RUNTIME_OPTIONS = frozenset(
    {"num_thread", "num_gpu", "main_gpu", "low_vram", "use_mmap", "use_mlock", "num_batch", "numa", "vocab_only"}
)
"""Options that change how the engine runs, not what it answers."""
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
        from shared_ollama.service.cache_redis import RedisStore

        return RedisStore(
            config.redis_url,
            ttl_seconds=config.ttl_seconds,
            max_entries=config.max_entries,
            max_bytes=config.max_bytes,
            max_vectors_per_context=config.semantic_max_candidates,
        )
    return MemoryStore(config.max_entries, config.max_bytes, config.ttl_seconds)


# --- keys and policy


def path_kind(request: JsonDict) -> str:
    """``chat`` when the request has messages, else ``generate``."""
    return "chat" if isinstance(request.get("messages"), list) else "generate"


def _image_hashes(images: object) -> list[str] | None:
    if not isinstance(images, list):
        return None
    out = []
    for image in images:
        data = image.encode() if isinstance(image, str) else image if isinstance(image, bytes) else None
        out.append(hashlib.sha256(data).hexdigest() if data is not None else orjson.dumps(image).decode())
    return out


def _number(value: object) -> object:
    """0 and 0.0 (and 1 and 1.0) are the same option."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _last_user(messages: list[object]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "user":
            return i
    return None


def _canonical(request: JsonDict, tenant: str, scope: str, model_digest: str | None, context: bool) -> bytes:
    if scope not in SCOPES:
        raise ValueError(f"cache scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    kind = path_kind(request)
    doc: JsonDict = {
        "v": KEY_VERSION,
        "kind": kind,
        "model": str(request.get("model") or ""),
        "digest": model_digest,
        "tenant": tenant if scope == "tenant" else None,
        "context": context,
        "body": {k: v for k, v in request.items() if k not in NOT_IN_KEY and v is not None},
        "options": {},
    }
    options = request.get("options")
    if isinstance(options, dict):
        doc["options"] = {k: _number(v) for k, v in options.items() if k not in RUNTIME_OPTIONS and v is not None}
    if request.get("images"):
        doc["images"] = _image_hashes(request["images"])
    messages = request.get("messages")
    if isinstance(messages, list):
        last = _last_user(messages) if context else None
        canon = []
        for i, message in enumerate(messages):
            if isinstance(message, dict):
                images = message.get("images")
                message = {k: v for k, v in message.items() if k != "images" and v is not None}
                if images:
                    message["images"] = _image_hashes(images)
                if i == last:
                    message["content"] = None
            canon.append(message)
        doc["messages"] = canon
    elif context:
        doc["body"].pop("prompt", None)
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def cache_key(request: JsonDict, *, tenant: str, scope: str, model_digest: str | None) -> str:
    """SHA-256 (hex) of what changes the answer to ``request`` (the module's docstring says what)."""
    return hashlib.sha256(_canonical(request, tenant, scope, model_digest, False)).hexdigest()


def context_key(request: JsonDict, *, tenant: str, scope: str, model_digest: str | None) -> str:
    """``cache_key`` without the last user message's text (the generate prompt): its semantic neighbourhood."""
    return hashlib.sha256(_canonical(request, tenant, scope, model_digest, True)).hexdigest()


def semantic_text(request: JsonDict) -> str | None:
    """The text compared semantically: the last user message's content (chat) or the prompt (generate)."""
    messages = request.get("messages")
    if isinstance(messages, list):
        last = _last_user(messages)
        content = messages[last].get("content") if last is not None else None
    else:
        content = request.get("prompt")
    return content if isinstance(content, str) and content.strip() else None


def message_count(request: JsonDict) -> int:
    messages = request.get("messages")
    return len(messages) if isinstance(messages, list) else 1


def _mode(value: object, where: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    mode = value.strip().lower() if isinstance(value, str) else None
    if mode not in MODES:
        raise InvalidRequest(f"{where} must be one of {', '.join(MODES)}, not {value!r}", param="cache")
    return mode


def decide(request: JsonDict, header_mode: str | None, body_mode: str | None) -> str:
    """``off``, ``exact`` or ``semantic``: the explicit mode (the header first, then the body's ``cache``),
    else ``exact`` for a deterministic request (temperature 0, or a seed >= 0), else ``off``."""
    header = _mode(header_mode, f"the {CACHE_HEADER} header")
    body = _mode(body_mode, "cache")
    if header or body:
        return str(header or body)
    options = request.get("options")
    if not isinstance(options, dict):
        return "off"
    seed, temperature = options.get("seed"), options.get("temperature")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        return "exact"
    if isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature == 0:
        return "exact"
    return "off"


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
        entry = Entry(response_json, str(request.get("model") or ""), tenant, kind, time.time())
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
        return int(await self._safe("purge", self.backend.delete_matching(tenant=tenant, model=model), 0))

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
