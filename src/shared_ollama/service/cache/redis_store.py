"""The response cache in Redis, shared by every gateway replica (``CacheStore``).

Layout, all under ``shared-ollama:cache:``:

- ``e:<key>``: the entry (a JSON header line, then the response body), with the time-to-live as ``PX``;
- ``idx:all``: a sorted set of every entry key scored by its expiry (ms, Redis's clock), with ``sizes`` (key ->
  bytes), ``bytes`` and ``evictions``: the bounds. Past ``max_entries`` or ``max_bytes`` the entries that expire
  first (the oldest: every entry has the same time-to-live) are deleted. Not an LRU: a hit does not renew;
- ``idx:t:<tenant>`` and ``idx:m:<model>``: the keys per tenant and per model, for purges;
- ``v:<context key>``: the semantic vectors of one context (entry key -> float32 bytes, plus a ``#v`` version
  that changes on every write) and ``vz:<context key>``, their expiries, to keep the newest
  ``max_vectors_per_context`` of them.

Searching: Redis (without modules) cannot compute a nearest neighbour, so a replica loads a context's vectors
(``HGETALL``) and searches them with numpy. It keeps the matrices it loaded and reloads one only when its
version changed (one ``HGET`` per lookup otherwise). The cost of that trade-off: a context that is written as
often as it is read is transferred on every lookup (5,000 384-dim vectors are 7.7 MB), which is why the
candidates per context are bounded; the upside is no Redis module and one process-independent index.

Errors: a cache must not take the service down. Every Redis failure is logged (at most once per
``LOG_EVERY`` seconds), counted in ``stats()["errors"]`` and answered as a miss; for ``retry_after`` seconds
after one the store does not try Redis again (each call is a miss at once: no timeout per request while Redis
is down). The scripts name entry keys they compute (``e:<key>``): one Redis, not a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared_ollama.service.admission.inflight_redis import LUA_NOW
from shared_ollama.service.cache.memory_store import Entry, Vector, unit

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "shared-ollama:cache:"
LOG_EVERY = 30.0
_VERSION = b"#v"


# KEYS[1] idx:all, KEYS[2] sizes, KEYS[3] bytes; ARGV[1] the entry prefix (for forget_entry).
_FORGET = """local function forget(m)
  local s = redis.call('HGET', KEYS[2], m)
  if s then redis.call('DECRBY', KEYS[3], s); redis.call('HDEL', KEYS[2], m) end
  redis.call('ZREM', KEYS[1], m)
end
local function prune(now)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 512)) do forget(m) end
end
"""

# + KEYS[4] evictions, KEYS[5] the entry, KEYS[6] tenant index, KEYS[7] model index;
# ARGV: prefix, member, value, ttl ms, max entries, max bytes, size. Returns the evictions.
_PUT = (
    LUA_NOW
    + _FORGET
    + """prune(now)
local m, ttl = ARGV[2], tonumber(ARGV[4])
forget(m)
redis.call('SET', KEYS[5], ARGV[3], 'PX', ttl)
redis.call('ZADD', KEYS[1], now + ttl, m)
redis.call('HSET', KEYS[2], m, ARGV[7])
redis.call('INCRBY', KEYS[3], ARGV[7])
for i = 6, 7 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  redis.call('ZADD', KEYS[i], now + ttl, m)
  redis.call('PEXPIRE', KEYS[i], ttl)
end
local evicted = 0
while redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[5])
    or tonumber(redis.call('GET', KEYS[3]) or '0') > tonumber(ARGV[6]) do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if not oldest or oldest == m then break end
  forget(oldest)
  redis.call('DEL', ARGV[1] .. oldest)
  evicted = evicted + 1
end
if evicted > 0 then redis.call('INCRBY', KEYS[4], evicted) end
return evicted
"""
)

# ARGV: prefix, then the members to delete. Returns how many entries existed.
_DELETE = (
    _FORGET
    + """local n = 0
for i = 2, #ARGV do
  forget(ARGV[i])
  n = n + redis.call('DEL', ARGV[1] .. ARGV[i])
end
return n
"""
)

# + KEYS[4] evictions. Returns {entries, bytes, evictions}.
_STATS = (
    LUA_NOW
    + _FORGET
    + """prune(now)
return {redis.call('ZCARD', KEYS[1]), tonumber(redis.call('GET', KEYS[3]) or '0'),
        tonumber(redis.call('GET', KEYS[4]) or '0')}
"""
)

# KEYS[1] v:<ctx>, KEYS[2] vz:<ctx>; ARGV: version, ttl ms, cap, then member and vector (add) or members
# (remove: ARGV[4] == '-'). Expired vectors go first; past ``cap`` the oldest go.
_VECTORS = (
    LUA_NOW
    + """local function drop(m) redis.call('HDEL', KEYS[1], m); redis.call('ZREM', KEYS[2], m) end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do drop(m) end
if ARGV[4] == '-' then
  for i = 5, #ARGV do drop(ARGV[i]) end
else
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[4])
  local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
  if extra > 0 then
    for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, extra - 1)) do drop(m) end
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('DEL', KEYS[1], KEYS[2]) return 0 end
redis.call('HSET', KEYS[1], '#v', ARGV[1])
return 1
"""
)


class _Loaded:
    __slots__ = ("keys", "matrix", "version")

    def __init__(self, version: bytes, keys: list[str], matrix: np.ndarray) -> None:
        self.version, self.keys, self.matrix = version, keys, matrix


def _encode(entry: Entry) -> bytes:
    head = {"model": entry.model, "tenant": entry.tenant, "kind": entry.kind, "created": entry.created}
    return orjson.dumps(head) + b"\n" + entry.body


def _decode(raw: bytes) -> Entry:
    head, _, body = raw.partition(b"\n")
    meta = orjson.loads(head)
    return Entry(body, str(meta["model"]), str(meta["tenant"]), str(meta["kind"]), float(meta["created"]))


class RedisStore:
    """``CacheStore`` in Redis at ``url``, shared by every gateway process that names it."""

    def __init__(
        self,
        url: str,
        *,
        ttl_seconds: float,
        max_entries: int,
        max_bytes: int,
        max_vectors_per_context: int = 5000,
        local_vector_rows: int = 50_000,
        retry_after: float = 1.0,
        socket_timeout: float = 0.5,
    ) -> None:
        if ttl_seconds <= 0 or max_entries < 1 or max_bytes < 1 or max_vectors_per_context < 1:
            raise ValueError("ttl_seconds, max_entries, max_bytes and max_vectors_per_context must be positive")
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_vectors_per_context = max_vectors_per_context
        self.local_vector_rows = local_vector_rows
        self.retry_after = retry_after
        self._client: Redis = Redis.from_url(url, socket_connect_timeout=socket_timeout, socket_timeout=socket_timeout)
        self._put = self._client.register_script(_PUT)
        self._delete = self._client.register_script(_DELETE)
        self._stats = self._client.register_script(_STATS)
        self._vectors = self._client.register_script(_VECTORS)
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._down_until = 0.0
        self._logged_at = -LOG_EVERY
        self.errors = 0
        self.skipped = 0
        """Calls answered as a miss without trying Redis (within ``retry_after`` of an error)."""

    _bounds = (PREFIX + "idx:all", PREFIX + "sizes", PREFIX + "bytes")
    _evictions = PREFIX + "evictions"

    async def _guard(self, what: str, call: Callable[[], Awaitable[T]], default: T) -> T:
        now = time.monotonic()
        if now < self._down_until:
            self.skipped += 1
            return default
        try:
            return await call()
        except (RedisError, OSError) as exc:
            self.errors += 1
            self._down_until = time.monotonic() + self.retry_after
            if now - self._logged_at >= LOG_EVERY:
                self._logged_at = now
                log.warning("response cache: Redis %s failed, answering as a miss: %s", what, exc)
            return default

    async def get(self, key: str) -> Entry | None:
        raw = await self._guard("get", lambda: self._client.get(PREFIX + "e:" + key), None)
        if raw is None:
            return None
        try:
            return _decode(raw)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.errors += 1
            return None

    async def put(self, key: str, entry: Entry, ttl: float | None = None) -> bool:
        if entry.size > self.max_bytes:
            return False
        ttl_ms = self.ttl_ms if ttl is None else max(1, int(ttl * 1000))
        keys = [
            *self._bounds,
            self._evictions,
            PREFIX + "e:" + key,
            PREFIX + "idx:t:" + entry.tenant,
            PREFIX + "idx:m:" + entry.model,
        ]
        args = [PREFIX + "e:", key, _encode(entry), ttl_ms, self.max_entries, self.max_bytes, entry.size]
        done = await self._guard("put", lambda: self._put(keys=keys, args=args), None)
        return done is not None

    async def _members(self, index: str) -> set[str]:
        found = await self._guard("purge", lambda: self._client.zrange(PREFIX + index, 0, -1), None)
        return {m.decode() for m in found or ()}

    async def delete_matching(self, tenant: str | None = None, model: str | None = None) -> int:
        sets = []
        if tenant is not None:
            sets.append(await self._members("idx:t:" + tenant))
        if model is not None:
            sets.append(await self._members("idx:m:" + model))
        members = sorted(set.intersection(*sets) if sets else await self._members("idx:all"))
        deleted = 0
        for start in range(0, len(members), 500):
            batch = members[start : start + 500]
            args = [PREFIX + "e:", *batch]
            deleted += int(await self._guard("purge", lambda a=args: self._delete(keys=self._bounds, args=a), 0))
        if len(sets) == 1 and members:
            index = "idx:t:" + tenant if tenant is not None else "idx:m:" + str(model)
            await self._guard("purge", lambda: self._client.delete(PREFIX + index), 0)
        return deleted

    async def _write_vectors(self, context_key: str, tail: list[bytes | str]) -> None:
        keys = [PREFIX + "v:" + context_key, PREFIX + "vz:" + context_key]
        args = [uuid.uuid4().hex, self.ttl_ms, self.max_vectors_per_context, *tail]
        await self._guard("vector write", lambda: self._vectors(keys=keys, args=args), None)

    async def add_vector(self, context_key: str, vector: Vector, key: str) -> None:
        vec = unit(vector)
        if vec is not None:
            await self._write_vectors(context_key, [key, vec.tobytes()])

    async def discard_vector(self, context_key: str, key: str) -> None:
        await self._write_vectors(context_key, ["-", key])

    async def _load(self, context_key: str, dim: int) -> _Loaded | None:
        name = PREFIX + "v:" + context_key
        version = await self._guard("vector read", lambda: self._client.hget(name, _VERSION), None)
        cached = self._loaded.get(context_key)
        if version is None:
            self._loaded.pop(context_key, None)
            return None
        if cached is not None and cached.version == version:
            self._loaded.move_to_end(context_key)
            return cached
        raw: dict[bytes, bytes] | None = await self._guard("vector read", lambda: self._client.hgetall(name), None)
        if not raw:
            return None
        version = raw.pop(_VERSION, version)
        width = dim * 4
        pairs = [(k.decode(), v) for k, v in raw.items() if len(v) == width]
        matrix = np.frombuffer(b"".join(v for _, v in pairs), dtype=np.float32).reshape(len(pairs), dim)
        loaded = self._loaded[context_key] = _Loaded(version, [k for k, _ in pairs], matrix)
        self._loaded.move_to_end(context_key)
        rows = sum(len(item.keys) for item in self._loaded.values())
        while rows > self.local_vector_rows and len(self._loaded) > 1:
            _, dropped = self._loaded.popitem(last=False)
            rows -= len(dropped.keys)
        return loaded

    async def nearest(self, context_key: str, vector: Vector) -> tuple[str, float] | None:
        vec = unit(vector)
        if vec is None:
            return None
        loaded = await self._load(context_key, vec.shape[0])
        if loaded is None or not loaded.keys or loaded.matrix.shape[1] != vec.shape[0]:
            return None
        sims = loaded.matrix @ vec
        row = int(np.argmax(sims))
        return loaded.keys[row], float(sims[row])

    async def stats(self) -> dict[str, int]:
        keys = [*self._bounds, self._evictions]
        found = await self._guard("stats", lambda: self._stats(keys=keys, args=[PREFIX + "e:"]), None)
        entries, size, evictions = (int(x) for x in found) if found else (0, 0, 0)
        return {
            "entries": entries,
            "bytes": size,
            "evictions": evictions,
            "errors": self.errors,
            "skipped": self.skipped,
        }

    async def close(self) -> None:
        self._loaded.clear()
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
