"""The response cache in a real redis-server, shared by two gateway "processes" (two RedisStore)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import orjson
import pytest
from redis.asyncio import Redis

from shared_ollama.service.cache.redis_store import PREFIX, RedisStore
from shared_ollama.service.cache.response import CacheConfig, Entry, ResponseCache, make_store
from tests.support.cache import PARAPHRASE, QUESTION, answer, bag_of_words, chat
from tests.support.processes import free_port

POLL_TIMEOUT = 10.0
DB = 3
"""A database of its own, emptied before each test (the other Redis tests use 0)."""


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Readiness polling with a bounded deadline (not a fixed sleep)."""
    deadline = time.monotonic() + POLL_TIMEOUT
    while not await condition():
        assert time.monotonic() < deadline, f"timed out after {POLL_TIMEOUT}s waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def url(redis_url: str) -> AsyncIterator[str]:
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    client = Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    yield url


def store(url: str, **overrides: object) -> RedisStore:
    settings: dict = {"ttl_seconds": 60.0, "max_entries": 1000, "max_bytes": 10**7} | overrides
    return RedisStore(url, **settings)


@pytest.fixture
async def pair(url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    a, b = store(url), store(url)
    yield a, b
    await a.close()
    await b.close()


def entry(tenant: str = "web", model: str = "m", body: bytes = b'{"done": true}') -> Entry:
    return Entry(body=body, model=model, tenant=tenant, kind="chat", created=1.5)


async def test_two_processes_share_an_entry(pair: tuple[RedisStore, RedisStore]) -> None:
    a, b = pair
    assert await b.get("k1") is None
    assert await a.put("k1", entry(body=answer()))
    got = await b.get("k1")
    assert got == entry(body=answer())
    stats = await b.stats()
    assert (stats["entries"], stats["bytes"], stats["errors"]) == (1, entry(body=answer()).size, 0)


async def test_response_cache_across_processes_exact_and_semantic(url: str) -> None:
    config = CacheConfig(redis_url=url, semantic_threshold=0.9)
    one = ResponseCache(config, make_store(config), bag_of_words)
    two = ResponseCache(config, make_store(config), bag_of_words)
    try:
        assert await one.store(chat(QUESTION), "web", "semantic", "sha256:1", answer())
        exact = await two.lookup(chat(QUESTION, stream=True), "web", "exact", "sha256:1")
        assert exact is not None and exact.body == answer()
        near = await two.lookup(chat(PARAPHRASE), "web", "semantic", "sha256:1")
        assert near is not None and near.mode == "semantic" and near.similarity >= 0.9
        assert await two.lookup(chat(PARAPHRASE), "ops", "semantic", "sha256:1") is None
        assert await two.lookup(chat(PARAPHRASE), "web", "semantic", "sha256:2") is None
        assert await two.purge(tenant="web") == 1
        assert await one.lookup(chat(QUESTION), "web", "semantic", "sha256:1") is None
        assert await one.lookup(chat(PARAPHRASE), "web", "semantic", "sha256:1") is None  # its vector: gone
    finally:
        await one.close()
        await two.close()


async def test_ttl_expiry(url: str) -> None:
    short = store(url, ttl_seconds=0.3)
    try:
        assert await short.put("k", entry())
        assert await short.get("k") is not None

        async def gone() -> bool:
            return await short.get("k") is None

        await _until(gone, "the entry to expire")
        assert (await short.stats())["entries"] == 0
        assert (await short.stats())["bytes"] == 0
    finally:
        await short.close()


async def test_purge_by_tenant_and_model(pair: tuple[RedisStore, RedisStore]) -> None:
    a, b = pair
    await a.put("1", entry(tenant="web", model="m1"))
    await a.put("2", entry(tenant="web", model="m2"))
    await b.put("3", entry(tenant="ops", model="m1"))
    await b.put("4", entry(tenant="ops", model="m2"))
    assert await b.delete_matching(tenant="web") == 2
    assert await a.get("1") is None and await a.get("2") is None
    assert await a.get("3") is not None
    assert await a.delete_matching(tenant="ops", model="m2") == 1
    assert await a.delete_matching(model="m1") == 1
    assert await a.delete_matching(tenant="web") == 0
    stats = await a.stats()
    assert (stats["entries"], stats["bytes"]) == (0, 0)
    await a.put("5", entry())
    assert await b.delete_matching() == 1


async def test_bounds_evict_the_oldest(url: str) -> None:
    small = store(url, max_entries=3)
    try:
        for name in "abcd":
            assert await small.put(name, entry())
        assert await small.get("a") is None
        assert all([await small.get(k) for k in "bcd"])
        stats = await small.stats()
        assert (stats["entries"], stats["evictions"]) == (3, 1)
        size = entry().size
        tight = store(url, max_bytes=size * 2)
        await tight.put("e", entry())
        assert (await tight.stats())["entries"] == 2
        assert not await tight.put("huge", entry(body=b"x" * size * 2))
        await tight.close()
    finally:
        await small.close()


async def test_vectors_newest_kept_and_reloaded_on_change(pair: tuple[RedisStore, RedisStore], url: str) -> None:
    a, b = pair
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 32)).astype(np.float32)
    limited = store(url, max_vectors_per_context=3)
    try:
        for i, vec in enumerate(vectors):
            await limited.add_vector("ctx", vec, f"k{i}")
        found = await b.nearest("ctx", vectors[4])
        assert found is not None and found[0] == "k4" and found[1] == pytest.approx(1.0, abs=1e-5)
        assert (await b.nearest("ctx", vectors[0]))[0] != "k0"  # only the newest three are kept
        await a.discard_vector("ctx", "k4")
        assert (await b.nearest("ctx", vectors[4]))[0] != "k4"  # b reloads: the version changed
        assert await b.nearest("other", vectors[4]) is None
    finally:
        await limited.close()


async def test_redis_down_is_a_miss_not_an_error() -> None:
    down = RedisStore(
        f"redis://127.0.0.1:{free_port()}/0", ttl_seconds=60, max_entries=10, max_bytes=10**6, retry_after=0.0
    )
    try:
        assert await down.get("k") is None
        assert not await down.put("k", entry())
        assert await down.delete_matching(tenant="web") == 0
        await down.add_vector("ctx", [1.0, 0.0], "k")
        assert await down.nearest("ctx", [1.0, 0.0]) is None
        stats = await down.stats()
        assert (stats["errors"], stats["entries"]) == (6, 0)  # each call above failed once, and stats' own
        config = CacheConfig()
        cache = ResponseCache(config, down, bag_of_words)
        assert await cache.lookup(chat(QUESTION), "web", "semantic") is None
        assert not await cache.store(chat(QUESTION), "web", "exact", None, answer())
        assert (await cache.stats())["errors"] == 10  # a semantic lookup (2 calls), a store, and stats again
    finally:
        await down.close()


async def test_after_an_error_redis_is_left_alone_for_a_while() -> None:
    flaky = RedisStore(
        f"redis://127.0.0.1:{free_port()}/0", ttl_seconds=60, max_entries=10, max_bytes=10**6, retry_after=60.0
    )
    try:
        assert await flaky.get("k") is None
        for _ in range(100):
            assert await flaky.get("k") is None
        assert flaky.errors == 1 and flaky.skipped == 100  # no new connection attempt: Redis is left alone
    finally:
        await flaky.close()


async def test_stored_layout(pair: tuple[RedisStore, RedisStore], url: str) -> None:
    a, _ = pair
    await a.put("k", entry())
    raw = Redis.from_url(url)
    try:
        value = await raw.get(PREFIX + "e:k")
        head, _, body = value.partition(b"\n")
        assert orjson.loads(head)["tenant"] == "web" and body == b'{"done": true}'
        assert 0 < await raw.pttl(PREFIX + "e:k") <= 60_000
    finally:
        await raw.aclose()
