"""The response cache itself: semantic lookups with a fake embedder, the rules for storing and finding answers,
purges, failing stores, and hits replayed as streams.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from shared_ollama.service.cache.response import CacheConfig, Entry, MemoryStore, ResponseCache, make_store
from tests.support.cache import PARAPHRASE, QUESTION, UNRELATED, Clock, answer, bag_of_words, chat, cosine

# --- semantic lookups


def semantic_cache(embed=bag_of_words, **config: object) -> ResponseCache:  # type: ignore[no-untyped-def]
    cfg = CacheConfig(semantic_threshold=0.9, **config)  # type: ignore[arg-type]
    return ResponseCache(cfg, MemoryStore(cfg.max_entries, cfg.max_bytes, cfg.ttl_seconds), embed)


async def test_semantic_paraphrase_hits_and_unrelated_misses() -> None:
    assert 0.9 <= cosine(await bag_of_words(QUESTION), await bag_of_words(PARAPHRASE)) < 1.0
    cache = semantic_cache()
    request = chat(QUESTION)
    assert await cache.lookup(request, "web", "semantic") is None
    assert await cache.store(request, "web", "semantic", None, answer())
    hit = await cache.lookup(chat(PARAPHRASE), "web", "semantic")
    assert hit is not None and hit.mode == "semantic"
    assert 0.9 <= hit.similarity < 1.0
    assert hit.body == answer()
    assert await cache.lookup(chat(UNRELATED), "web", "semantic") is None
    assert await cache.lookup(chat(PARAPHRASE), "web", "exact") is None  # exact mode: no semantic search
    assert await cache.lookup(chat(PARAPHRASE), "ops", "semantic") is None  # another tenant's context
    exact = await cache.lookup(chat(QUESTION, stream=True), "web", "semantic")
    assert exact is not None and exact.mode == "exact" and exact.similarity == 1.0
    stats = await cache.stats()
    assert (stats["hits"], stats["semantic_hits"], stats["misses"]) == (2, 1, 4)
    assert stats["hit_rate"] == pytest.approx(2 / 6)
    assert stats["entries"] == 1


async def test_semantic_same_question_after_other_turns_misses() -> None:
    cache = semantic_cache()
    await cache.store(chat("Hello", "Hi!", QUESTION), "web", "semantic", None, answer())
    assert await cache.lookup(chat("Hello", "Hi!", PARAPHRASE), "web", "semantic") is not None
    assert await cache.lookup(chat("Talk like a pirate", "Arr!", QUESTION), "web", "semantic") is None
    assert await cache.lookup(chat(PARAPHRASE), "web", "semantic") is None


async def test_semantic_skipped_for_long_conversations() -> None:
    cache = semantic_cache(semantic_max_messages=2)
    long_one = chat("a", "b", QUESTION)
    await cache.store(long_one, "web", "semantic", None, answer())
    assert await cache.lookup(chat("a", "b", PARAPHRASE), "web", "semantic") is None
    assert await cache.lookup(long_one, "web", "semantic") is not None  # exact still works


async def test_embed_timeout_and_failure_are_misses() -> None:
    calls = 0

    async def slow(text: str) -> list[float]:
        nonlocal calls
        calls += 1
        if calls > 1:
            await asyncio.sleep(10)
        return await bag_of_words(text)

    cache = semantic_cache(slow, embed_timeout=0.05)
    await cache.store(chat(QUESTION), "web", "semantic", None, answer())
    assert await cache.lookup(chat(PARAPHRASE), "web", "semantic") is None
    assert (await cache.stats())["embed_errors"] == 1

    async def broken(text: str) -> list[float]:
        raise RuntimeError("embedder down")

    cache = semantic_cache(broken)
    assert await cache.store(chat(QUESTION), "web", "semantic", None, answer())  # kept, without a vector
    assert await cache.lookup(chat(PARAPHRASE), "web", "semantic") is None
    assert await cache.lookup(chat(QUESTION), "web", "semantic") is not None


async def test_semantic_neighbour_whose_entry_expired_is_a_miss() -> None:
    clock = Clock()
    cfg = CacheConfig(semantic_threshold=0.9, ttl_seconds=10)
    store = MemoryStore(cfg.max_entries, cfg.max_bytes, cfg.ttl_seconds, clock=clock)
    cache = ResponseCache(cfg, store, bag_of_words)
    await cache.store(chat(QUESTION), "web", "semantic", None, answer())
    clock.now += 11
    assert await cache.lookup(chat(PARAPHRASE), "web", "semantic") is None
    assert len(store.index) == 0


# --- the cache's rules


async def test_exact_store_and_lookup_rules() -> None:
    cache = ResponseCache(CacheConfig(), make_store(CacheConfig()))
    request = chat("What is the capital of France?")
    assert not await cache.store(request, "web", "off", None, answer())
    assert not await cache.store(request, "web", "exact", None, answer(done_reason=None))
    assert not await cache.store(request, "web", "exact", None, answer(done_reason="load"))
    assert not await cache.store(request, "web", "exact", None, answer(done=False))
    assert not await cache.store(request, "web", "exact", None, b'{"error": "model not found"}')
    assert not await cache.store(request, "web", "exact", None, b"not json")
    assert await cache.lookup(request, "web", "exact") is None
    assert await cache.store(request, "web", "exact", "sha256:1", answer())
    assert await cache.lookup(request, "web", "off", "sha256:1") is None
    assert await cache.lookup(request, "web", "exact", "sha256:2") is None  # the model was re-created
    hit = await cache.lookup({**request, "stream": True}, "web", "exact", "sha256:1")
    assert hit is not None and hit.body == answer() and hit.entry.tenant == "web"
    disabled = ResponseCache(CacheConfig(enabled=False), make_store(CacheConfig()))
    assert not await disabled.store(request, "web", "exact", None, answer())
    assert await disabled.lookup(request, "web", "exact") is None


async def test_purge_by_tenant_and_model() -> None:
    cache = ResponseCache(CacheConfig(), make_store(CacheConfig()))
    await cache.store(chat("a"), "web", "exact", None, answer())
    await cache.store(chat("b"), "web", "exact", None, answer())
    await cache.store(chat("a"), "ops", "exact", None, answer())
    assert await cache.purge(tenant="web") == 2
    assert await cache.lookup(chat("a"), "web", "exact") is None
    assert await cache.lookup(chat("a"), "ops", "exact") is not None
    assert await cache.purge(model="smollm2:135m") == 1
    assert (await cache.stats())["entries"] == 0


async def test_a_failing_store_is_a_miss_not_an_error() -> None:
    class Broken(MemoryStore):
        async def get(self, key: str) -> Entry | None:
            raise ConnectionError("gone")

        async def put(self, key: str, entry: Entry, ttl: float | None = None) -> bool:
            raise ConnectionError("gone")

    cache = ResponseCache(CacheConfig(), Broken(10, 10**6, 60))
    assert await cache.lookup(chat("a"), "web", "exact") is None
    assert not await cache.store(chat("a"), "web", "exact", None, answer())
    assert (await cache.stats())["errors"] == 2
    unkeyable = chat("a", options={"seed": 2**70})  # orjson writes no integer past 64 bits
    assert await cache.lookup(unkeyable, "web", "exact") is None
    assert not await cache.store(unkeyable, "web", "exact", None, answer())
    assert (await cache.stats())["errors"] == 4


# --- hits replayed as streams


async def test_hit_replays_its_entry() -> None:
    cache = ResponseCache(CacheConfig(), make_store(CacheConfig()))
    await cache.store(chat("q"), "web", "exact", None, answer("A short answer"))
    hit = await cache.lookup(chat("q", stream=True), "web", "exact")
    assert hit is not None
    chunks = [orjson.loads(line) for line in hit.ndjson()]
    assert "".join(c["message"]["content"] for c in chunks) == "A short answer"
