"""In-flight places shared through a real redis-server by two gateway "replicas" (two RedisInflight)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from shared_ollama.errors import BackendUnavailable
from shared_ollama.service.admission.inflight_redis import KEY_PREFIX, RedisInflight
from tests.support.processes import free_port

POLL_TIMEOUT = 10.0


def _key() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}:text"


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Readiness polling with a bounded deadline (not a fixed sleep)."""
    deadline = time.monotonic() + POLL_TIMEOUT
    while not await condition():
        assert time.monotonic() < deadline, f"timed out after {POLL_TIMEOUT}s waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[tuple[RedisInflight, RedisInflight]]:
    a, b = RedisInflight(redis_url, 30.0), RedisInflight(redis_url, 30.0)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _redis_now_ms(client: Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_replicas_share_one_cap(replicas: tuple[RedisInflight, RedisInflight], raw: Redis) -> None:
    a, b = replicas
    key = _key()
    assert await a.acquire(key, "r1", 3)
    assert await b.acquire(key, "r2", 3)
    assert await a.acquire(key, "r3", 3)
    assert not await a.acquire(key, "r4", 3)
    assert not await b.acquire(key, "r4", 3)
    assert await a.count(key) == 3
    assert await b.count(key) == 3

    await b.release(key, "r2")
    assert await a.count(key) == 2
    assert await a.acquire(key, "r4", 3)
    assert not await b.acquire(key, "r5", 3)

    redis_key = KEY_PREFIX + key
    assert sorted(await raw.zrange(redis_key, 0, -1)) == [b"r1", b"r3", b"r4"]
    assert 30_000 < await raw.pttl(redis_key) <= 60_000


async def test_release_of_unknown_member_is_a_no_op(replicas: tuple[RedisInflight, RedisInflight]) -> None:
    a, b = replicas
    key = _key()
    assert await a.acquire(key, "held", 2)
    await a.release(key, "unknown")
    await b.release(key, "unknown")
    await b.release(_key(), "never-acquired")
    assert await b.count(key) == 1
    assert await b.acquire(key, "second", 2)
    assert not await a.acquire(key, "third", 2)


async def test_count_is_exact(replicas: tuple[RedisInflight, RedisInflight]) -> None:
    a, b = replicas
    key = _key()
    assert await a.count(key) == 0
    for i in range(5):
        assert await (a if i % 2 else b).acquire(key, f"r{i}", 10)
        assert await a.count(key) == i + 1
    assert await a.acquire(key, "r0", 10)  # the same member again holds no second place
    assert await b.count(key) == 5
    await a.release(key, "r0")
    await a.release(key, "r0")
    assert await b.count(key) == 4
    for i in range(1, 5):
        await b.release(key, f"r{i}")
    assert await a.count(key) == 0


async def test_crashed_replica_places_come_back_after_the_lease(redis_url: str) -> None:
    key = _key()
    crashed = RedisInflight(redis_url, 1.5)
    survivor = RedisInflight(redis_url, 30.0)
    try:
        await crashed.start()
        assert await crashed.acquire(key, "lost", 1)
        await crashed.close()  # no release: the replica is gone
        assert await survivor.count(key) == 1
        assert not await survivor.acquire(key, "waiting", 1)

        async def freed() -> bool:
            return await survivor.count(key) == 0

        await _until(freed, "the crashed replica's lease to expire")
        assert await survivor.acquire(key, "waiting", 1)
    finally:
        await crashed.close()
        await survivor.close()


async def test_heartbeat_keeps_a_place_beyond_its_lease(redis_url: str, raw: Redis) -> None:
    key = _key()
    alive = RedisInflight(redis_url, 1.5)
    other = RedisInflight(redis_url, 30.0)
    try:
        await alive.start()
        assert await alive.acquire(key, "long-request", 1)
        first_expiry = await raw.zscore(KEY_PREFIX + key, "long-request")
        assert first_expiry is not None
        start = alive.refreshes

        async def past_first_lease() -> bool:
            return alive.refreshes >= start + 2 and await _redis_now_ms(raw) > first_expiry

        await _until(past_first_lease, "two lease refreshes and the end of the first lease")
        assert await other.count(key) == 1
        assert not await other.acquire(key, "intruder", 1)
        refreshed_expiry = await raw.zscore(KEY_PREFIX + key, "long-request")
        assert refreshed_expiry is not None and refreshed_expiry > first_expiry
        # A refresh extends the place by a whole lease (1500 ms) and the key by two, from the moment it runs (Redis's
        # clock): one made between two readings of that clock lands between them (a heartbeat's too).
        before = await _redis_now_ms(raw)
        await alive.refresh()
        expiry = await raw.zscore(KEY_PREFIX + key, "long-request")
        key_expiry = await raw.pexpiretime(KEY_PREFIX + key)
        after = await _redis_now_ms(raw)
        assert expiry is not None and before + 1500 <= expiry <= after + 1500, (before, expiry, after)
        assert before + 3000 <= key_expiry <= after + 3000, (before, key_expiry, after)
    finally:
        await alive.close()
        await other.close()


async def test_unreachable_redis_is_backend_unavailable() -> None:
    inflight = RedisInflight(f"redis://127.0.0.1:{free_port()}/0", 5.0)
    try:
        with pytest.raises(BackendUnavailable, match=r"shared state \(Redis\) unreachable"):
            await inflight.acquire(_key(), "r1", 1)
        with pytest.raises(BackendUnavailable, match=r"shared state \(Redis\) unreachable"):
            await inflight.count(_key())
        with pytest.raises(BackendUnavailable, match=r"shared state \(Redis\) unreachable"):
            await inflight.release(_key(), "r1")
    finally:
        await inflight.close()
