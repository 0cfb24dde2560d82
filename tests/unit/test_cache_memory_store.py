"""The in-memory cache store: LRU by entries and bytes, TTL, purges, and its semantic vector index."""

from __future__ import annotations

import numpy as np
import pytest

from shared_ollama.service.cache import memory_store as cache_store
from shared_ollama.service.cache.memory_store import MemoryStore, VectorIndex
from tests.support.cache import Clock, entry

# --- memory store


async def test_lru_by_entries() -> None:
    store = MemoryStore(max_entries=3, max_bytes=10**9, ttl_seconds=60)
    for name in "abc":
        assert await store.put(name, entry())
    assert await store.get("a") is not None  # a is now the most recent
    await store.put("d", entry())
    assert await store.get("b") is None
    assert all([await store.get(k) for k in "acd"])
    stats = await store.stats()
    assert stats["entries"] == 3
    assert stats["evictions"] == 1


async def test_lru_by_bytes() -> None:
    body = b"x" * 1000
    size = entry(body).size
    store = MemoryStore(max_entries=100, max_bytes=size * 3 + 10, ttl_seconds=60)
    for name in "abcd":
        await store.put(name, entry(body))
    assert await store.get("a") is None
    stats = await store.stats()
    assert stats["entries"] == 3
    assert stats["bytes"] == size * 3
    assert stats["evictions"] == 1
    assert not await store.put("huge", entry(b"y" * (size * 4)))  # larger than the whole cache: not kept
    assert (await store.stats())["entries"] == 3
    await store.put("a", entry(b"small"))  # replacing an entry counts its new size only
    await store.put("a", entry(b"small"))
    assert (await store.stats())["bytes"] == size * 2 + entry(b"small").size


async def test_ttl_with_injected_clock() -> None:
    clock = Clock()
    store = MemoryStore(max_entries=10, max_bytes=10**6, ttl_seconds=10, clock=clock)
    await store.put("a", entry())
    await store.put("short", entry(), ttl=2)
    clock.now += 5
    assert await store.get("a") is not None
    assert await store.get("short") is None
    clock.now += 5
    assert await store.get("a") is None
    stats = await store.stats()
    assert (stats["entries"], stats["bytes"], stats["expired"], stats["evictions"]) == (0, 0, 2, 0)


async def test_delete_matching() -> None:
    store = MemoryStore(max_entries=10, max_bytes=10**6, ttl_seconds=60)
    await store.put("1", entry(tenant="web", model="m1"))
    await store.put("2", entry(tenant="web", model="m2"))
    await store.put("3", entry(tenant="ops", model="m1"))
    await store.put("4", entry(tenant="ops", model="m2"))
    assert await store.delete_matching(tenant="web", model="m1") == 1
    assert await store.delete_matching(model="m2") == 2
    assert await store.delete_matching(tenant="nobody") == 0
    assert await store.get("3") is not None
    assert await store.delete_matching() == 1
    assert (await store.stats())["entries"] == 0


# --- semantic index


def test_vector_index_nearest_discard_and_compaction() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((200, 16)).astype(np.float32)
    index = VectorIndex()
    for i, vec in enumerate(vectors):
        index.add("ctx", vec, f"k{i}")
    found = index.nearest("ctx", vectors[17] * 3)
    assert found is not None and found[0] == "k17" and found[1] == pytest.approx(1.0, abs=1e-5)
    for i in range(150):  # past half dead: the matrix is compacted
        if i != 170:
            index.discard(f"k{i}")
    assert len(index) == 50
    assert index.nearest("ctx", vectors[17]) is not None and index.nearest("ctx", vectors[17])[0] != "k17"
    assert index.nearest("ctx", vectors[190])[0] == "k190"
    assert index.nearest("other", vectors[190]) is None
    index.add("ctx", np.ones(8), "k-dim8")  # another dimension: the context starts again
    assert len(index) == 1
    assert index.nearest("ctx", vectors[190]) is None
    capped = VectorIndex(max_per_context=3)
    for i in range(5):
        capped.add("ctx", vectors[i], f"k{i}")
    assert len(capped) == 3 and capped.nearest("ctx", vectors[0])[0] != "k0"


async def test_memory_store_searches_large_contexts_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_store, "OFFLOAD_ROWS", 4)
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((10, 8)).astype(np.float32)
    store = MemoryStore(max_entries=100, max_bytes=10**6, ttl_seconds=60)
    for i, vec in enumerate(vectors):
        await store.put(f"k{i}", entry())
        await store.add_vector("ctx", vec, f"k{i}")
    await store.add_vector("ctx", vectors[0], "not-stored")  # no entry, no vector
    await store.delete_matching()  # every vector goes with its entry
    assert await store.nearest("ctx", vectors[3]) is None
    for i, vec in enumerate(vectors):
        await store.put(f"k{i}", entry())
        await store.add_vector("ctx", vec, f"k{i}")
    await store.discard_vector("ctx", "k3")
    found = await store.nearest("ctx", vectors[5])
    assert found is not None and found[0] == "k5"
    found = await store.nearest("ctx", vectors[3])
    assert found is not None and found[0] != "k3"
