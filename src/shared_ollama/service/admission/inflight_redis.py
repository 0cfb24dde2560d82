"""In-flight places shared by every gateway replica, in Redis.

Each key is a sorted set ``shared-ollama:inflight:<key>`` whose members are request ids scored by the
expiry of their lease (milliseconds, Redis's own clock, so the replicas' clocks do not matter). Taking a
place is one Lua script: drop the expired members, then add the new one only while fewer than ``cap``
remain. A background task refreshes the leases of the places this process holds every ``lease / 3``
seconds, so a crashed replica's places come back at most one lease after its last refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from shared_ollama.errors import BackendUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY_PREFIX = "shared-ollama:inflight:"
_RETRY_AFTER = 2.0

LUA_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
"""Lua prelude of every script here and in the Redis cache store: ``now``, Redis's own clock in milliseconds
(the one clock all replicas share)."""

# KEYS[1] the set; ARGV: member, cap, lease ms, key ttl ms. 1 when the place was taken, else 0.
_ACQUIRE = (
    LUA_NOW
    + """redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
)

# KEYS[1] the set. Places held now.
_COUNT = LUA_NOW + "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\nreturn redis.call('ZCARD', KEYS[1])\n"

# KEYS: the sets; ARGV: lease ms, key ttl ms, then per key its member count and members. Only members
# still present are refreshed (XX): a place that expired or was released is not taken back.
_REFRESH = (
    LUA_NOW
    + """local i = 3
for k = 1, #KEYS do
  local n = tonumber(ARGV[i])
  for j = i + 1, i + n do
    redis.call('ZADD', KEYS[k], 'XX', now + tonumber(ARGV[1]), ARGV[j])
  end
  i = i + n + 1
  if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('PEXPIRE', KEYS[k], ARGV[2]) end
end
return #KEYS
"""
)


class RedisInflight:
    """``InflightCounter`` over Redis: caps that hold across every gateway replica sharing ``url``."""

    remote = True

    def __init__(self, url: str, lease_seconds: float) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.lease_seconds = lease_seconds
        self._lease_ms = max(1, int(lease_seconds * 1000))
        self._key_ttl_ms = self._lease_ms * 2
        self._client: Redis = Redis.from_url(
            url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        )
        self._acquire = self._client.register_script(_ACQUIRE)
        self._count = self._client.register_script(_COUNT)
        self._refresh = self._client.register_script(_REFRESH)
        self._held: dict[str, set[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self.refreshes = 0
        """Lease refreshes sent to Redis so far (each covers every place held at that moment)."""

    @staticmethod
    def _key(key: str) -> str:
        return KEY_PREFIX + key

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(
                f"shared state (Redis) unreachable: {what} failed: {exc}", retry_after=_RETRY_AFTER
            ) from exc

    async def acquire(self, key: str, member: str, cap: int) -> bool:
        args = [member, cap, self._lease_ms, self._key_ttl_ms]
        taken = await self._call("acquire", lambda: self._acquire(keys=[self._key(key)], args=args))
        if int(taken) != 1:
            return False
        self._held.setdefault(key, set()).add(member)
        return True

    async def release(self, key: str, member: str) -> None:
        members = self._held.get(key)
        if members is not None:
            members.discard(member)
            if not members:
                del self._held[key]
        await self._call("release", lambda: self._client.zrem(self._key(key), member))

    async def count(self, key: str) -> int:
        return int(await self._call("count", lambda: self._count(keys=[self._key(key)])))

    async def refresh(self) -> None:
        """Extend the lease of every place this process holds (one script call); no-op when none."""
        held = {key: sorted(members) for key, members in self._held.items() if members}
        if not held:
            return
        args: list[str | int] = [self._lease_ms, self._key_ttl_ms]
        for members in held.values():
            args.append(len(members))
            args.extend(members)
        keys = [self._key(key) for key in held]
        await self._call("lease refresh", lambda: self._refresh(keys=keys, args=args))
        self.refreshes += 1

    async def _heartbeat(self) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except BackendUnavailable as exc:
                log.warning("in-flight lease refresh failed (places expire if this lasts): %s", exc.message)

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._heartbeat(), name="inflight-lease-refresh")

    async def close(self) -> None:
        """Stop refreshing and disconnect. Held places are not released: their leases run out."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._held.clear()
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
