"""Quota buckets shared by every gateway replica, in Redis.

Each bucket is a hash ``shared-ollama:quota:<tenant>:<rule>`` with its ``level`` and the time it was that level
(``at``, milliseconds on Redis's own clock, so the replicas' clocks do not matter). One Lua script refills a
tenant's buckets, checks and takes (or settles) every charge at once, and lets a bucket expire when it would be
full again: an absent bucket is a full one. The arithmetic is ``buckets.Rule``'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from shared_ollama.errors import BackendUnavailable
from shared_ollama.service.admission.inflight_redis import LUA_NOW
from shared_ollama.service.quotas.buckets import Charge, Outcome

KEY_PREFIX = "shared-ollama:quota:"
_RETRY_AFTER = 2.0

# KEYS: the buckets. ARGV[1]: '1' to take only if every charge fits, '0' to settle regardless; then per bucket
# its limit, period (ms) and cost. Returns {1 if applied else 0, level of each bucket afterwards (as strings:
# Redis would cut Lua's numbers to integers)}.
_APPLY = (
    LUA_NOW
    + """local check = ARGV[1] == '1'
local levels = {}
local fits = true
for i = 1, #KEYS do
  local limit = tonumber(ARGV[3 * i - 1])
  local period = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local level = limit
  local saved = redis.call('HMGET', KEYS[i], 'level', 'at')
  if saved[1] then
    level = math.min(limit, tonumber(saved[1]) + math.max(0, now - tonumber(saved[2])) * limit / period)
  end
  levels[i] = level
  if cost - level > 1e-9 then fits = false end
end
local out = {0}
if check and not fits then
  for i = 1, #KEYS do out[i + 1] = tostring(levels[i]) end
  return out
end
out[1] = 1
for i = 1, #KEYS do
  local limit = tonumber(ARGV[3 * i - 1])
  local period = tonumber(ARGV[3 * i])
  local level = math.min(limit, levels[i] - tonumber(ARGV[3 * i + 1]))
  if level >= limit then
    redis.call('DEL', KEYS[i])
  else
    redis.call('HSET', KEYS[i], 'level', tostring(level), 'at', now)
    redis.call('PEXPIRE', KEYS[i], math.ceil((limit - level) * period / limit) + 1000)
  end
  out[i + 1] = tostring(level)
end
return out
"""
)


class RedisBuckets:
    """``BucketStore`` over Redis: quotas that hold across every gateway replica sharing ``url``."""

    remote = True

    def __init__(self, url: str) -> None:
        self._client: Redis = Redis.from_url(
            url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        )
        self._apply = self._client.register_script(_APPLY)

    async def take(self, key: str, charges: Sequence[Charge]) -> Outcome:
        return await self._run("quota check", key, charges, check=True)

    async def settle(self, key: str, charges: Sequence[Charge]) -> Outcome:
        return await self._run("quota settlement", key, charges, check=False)

    async def _run(self, what: str, key: str, charges: Sequence[Charge], *, check: bool) -> Outcome:
        keys = [f"{KEY_PREFIX}{key}:{c.rule.name}" for c in charges]
        args: list[str | int | float] = ["1" if check else "0"]
        for charge in charges:
            args += [charge.rule.limit, max(1, round(charge.rule.period * 1000)), charge.cost]
        try:
            reply = await self._apply(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(
                f"shared state (Redis) unreachable: {what} failed: {exc}", retry_after=_RETRY_AFTER
            ) from exc
        return Outcome(int(reply[0]) == 1, tuple(float(v) for v in reply[1:]))

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
