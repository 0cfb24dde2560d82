"""The response cache: keys, policy, the memory store and its semantic index, replay of streams."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re

import numpy as np
import orjson
import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.service import cache_store
from shared_ollama.service.cache import (
    CacheConfig,
    Entry,
    MemoryStore,
    ResponseCache,
    aggregate_ndjson,
    cache_key,
    context_key,
    decide,
    make_store,
    replay_ndjson,
)
from shared_ollama.service.cache_store import VectorIndex

IMAGE_A = base64.b64encode(b"\x89PNG first image" * 50).decode()
IMAGE_B = base64.b64encode(b"\x89PNG other image" * 50).decode()


def chat(*turns: str, **extra: object) -> dict:
    """A chat request whose messages alternate user / assistant, ending with the last user turn."""
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]
    return {"model": "smollm2:135m", "messages": messages, "options": {"temperature": 0}, **extra}


def key(request: dict, tenant: str = "web", scope: str = "tenant", digest: str | None = "sha256:aa") -> str:
    return cache_key(request, tenant=tenant, scope=scope, model_digest=digest)


def ctx_key(request: dict, tenant: str = "web", digest: str | None = "sha256:aa") -> str:
    return context_key(request, tenant=tenant, scope="tenant", model_digest=digest)


def answer(content: str = "Paris is the capital of France.", **extra: object) -> bytes:
    body = {
        "model": "smollm2:135m",
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "total_duration": 1_000_000,
        "prompt_eval_count": 12,
        "eval_count": 7,
        "eval_duration": 500_000,
        **extra,
    }
    return orjson.dumps(body)


def entry(body: bytes = b"{}", tenant: str = "web", model: str = "m") -> Entry:
    return Entry(body=body, model=model, tenant=tenant, kind="chat", created=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- keys


def test_key_is_stable_and_ignores_what_does_not_change_the_answer() -> None:
    base = key(chat("What is the capital of France?"))
    reordered = {
        "options": {"temperature": 0},
        "messages": [{"content": "What is the capital of France?", "role": "user"}],
    }
    reordered["model"] = "smollm2:135m"
    assert key(reordered) == base
    assert key(chat("What is the capital of France?", stream=True)) == base
    assert key(chat("What is the capital of France?", stream=False, keep_alive="5m")) == base
    assert key(chat("What is the capital of France?", cache="semantic")) == base
    runtime = chat("What is the capital of France?")
    runtime["options"] |= {"num_thread": 4, "num_gpu": 99, "use_mmap": False, "use_mlock": True, "num_batch": 64}
    assert key(runtime) == base
    no_images = chat("What is the capital of France?", images=[])
    no_images["messages"][0]["images"] = []
    assert key(no_images) == base
    as_float = chat("What is the capital of France?")
    as_float["options"]["temperature"] = 0.0
    assert key(as_float) == base
    assert re.fullmatch(r"[0-9a-f]{64}", base)


def test_key_changes_with_what_changes_the_answer() -> None:
    request = chat("What is the capital of France?")
    base = key(request)
    variants = [
        key(request, digest="sha256:bb"),  # the model re-created
        key(request, digest=None),
        key({**request, "model": "qwen3:0.6b"}),
        key({**request, "options": {"temperature": 0, "seed": 1}}),
        key({**request, "options": {"temperature": 0, "num_ctx": 4096}}),
        key({**request, "options": {"temperature": 0.5}}),
        key(chat("What is the capital of Spain?")),
        key({**request, "format": "json"}),
        key({**request, "tools": [{"type": "function", "function": {"name": "f"}}]}),
        key({**request, "think": True}),
        key({**request, "template": "{{ .Prompt }}"}),
        key(request, tenant="ops"),
        key({"model": "smollm2:135m", "prompt": "What is the capital of France?", "options": {"temperature": 0}}),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_generate_fields_are_in_the_key() -> None:
    request = {"model": "m", "prompt": "Once", "options": {"seed": 3}}
    keys = {
        key(request),
        key({**request, "system": "Be short."}),
        key({**request, "suffix": "end"}),
        key({**request, "raw": True}),
        key({**request, "images": [IMAGE_A]}),
        key({**request, "context": [1, 2, 3]}),
    }
    assert len(keys) == 6


def test_images_are_hashed_not_embedded() -> None:
    def with_image(image: str) -> dict:
        request = chat("What is in this picture?")
        request["messages"][0]["images"] = [image]
        return request

    assert key(with_image(IMAGE_A)) == key(with_image(IMAGE_A))
    assert key(with_image(IMAGE_A)) != key(with_image(IMAGE_B))
    assert key(with_image(IMAGE_A)) != key(chat("What is in this picture?"))
    from shared_ollama.service.cache import _canonical

    canonical = _canonical(with_image(IMAGE_A), "web", "tenant", None, False)
    assert IMAGE_A.encode() not in canonical
    assert hashlib.sha256(IMAGE_A.encode()).hexdigest().encode() in canonical


def test_tenant_scope_and_shared_scope() -> None:
    request = chat("hi")
    assert key(request, tenant="a") != key(request, tenant="b")
    assert key(request, tenant="a", scope="shared") == key(request, tenant="b", scope="shared")
    assert key(request, tenant="a", scope="shared") != key(request, tenant="a")
    with pytest.raises(ValueError):
        key(request, scope="global")
    with pytest.raises(ValueError):
        CacheConfig(scope="global")


def test_context_key_leaves_out_only_the_last_user_message() -> None:
    one = chat("Hello", "Hi! How can I help?", "What is the capital of France?")
    two = chat("Hello", "Hi! How can I help?", "Which city is France's capital?")
    other_history = chat("Bonjour", "Salut !", "What is the capital of France?")
    assert key(one) != key(two)
    assert ctx_key(one) == ctx_key(two)
    assert ctx_key(one) != ctx_key(other_history)
    assert ctx_key(one) != key(one)
    assert ctx_key(one) != ctx_key(one, tenant="ops")
    prompt = {"model": "m", "prompt": "a", "options": {"seed": 1}}
    assert ctx_key(prompt) == ctx_key({**prompt, "prompt": "b"})
    assert ctx_key(prompt) != ctx_key({**prompt, "system": "s"})


# --- policy


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"temperature": 0}, "exact"),
        ({"temperature": 0.0, "top_p": 0.9}, "exact"),
        ({"seed": 42, "temperature": 0.8}, "exact"),
        ({"seed": 0}, "exact"),
        ({"seed": -1, "temperature": 0.8}, "off"),
        ({"temperature": 0.7}, "off"),
        ({}, "off"),
        (None, "off"),
    ],
)
def test_decide_by_determinism(options: dict | None, expected: str) -> None:
    request = {"model": "m", "prompt": "p"} if options is None else {"model": "m", "prompt": "p", "options": options}
    assert decide(request, None, None) == expected


def test_decide_explicit_mode_wins() -> None:
    hot = {"model": "m", "prompt": "p", "options": {"temperature": 0.9}}
    cold = {"model": "m", "prompt": "p", "options": {"temperature": 0}}
    assert decide(hot, "exact", None) == "exact"
    assert decide(hot, None, "semantic") == "semantic"
    assert decide(cold, "off", None) == "off"
    assert decide(cold, None, "off") == "off"
    assert decide(hot, " Semantic ", None) == "semantic"
    assert decide(hot, "exact", "off") == "exact"  # the header first
    assert decide(cold, "", None) == "exact"  # an empty header is no header
    for header, body in (("sometimes", None), (None, "yes"), (None, True)):
        with pytest.raises(InvalidRequest) as raised:
            decide(cold, header, body)  # type: ignore[arg-type]
        assert raised.value.param == "cache"


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


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


async def bag_of_words(text: str) -> list[float]:
    """A deterministic fake embedding: word counts hashed into 512 buckets."""
    vec = [0.0] * 512
    for word in _words(text):
        vec[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % 512] += 1.0
    return vec


def cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


QUESTION = "tell me the capital city of france"
PARAPHRASE = "please tell me the capital city of france"
UNRELATED = "how do I bake a sourdough bread at home"


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


# --- streams


def test_replay_chat_stream() -> None:
    content = "Paris is the capital of France. It sits on the Seine, and about two million people live there."
    body = orjson.loads(answer(content))
    body["message"]["thinking"] = "The user asks about geography."
    lines = replay_ndjson(body, "chat")
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    chunks = [orjson.loads(line) for line in lines]
    assert len(chunks) >= 4
    assert "".join(c["message"]["content"] for c in chunks) == content
    assert "".join(c["message"].get("thinking", "") for c in chunks) == body["message"]["thinking"]
    assert all(c["done"] is False for c in chunks[:-1])
    final = chunks[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert (final["eval_count"], final["prompt_eval_count"], final["total_duration"]) == (7, 12, 1_000_000)
    assert final["message"] == {"role": "assistant", "content": ""}
    assert all(c["model"] == "smollm2:135m" and c["created_at"] for c in chunks)
    assert orjson.loads(aggregate_ndjson(lines, "chat")) == body


def test_replay_generate_stream_and_tool_calls() -> None:
    body = {"model": "m", "created_at": "t", "response": "Once upon a time", "done": True, "done_reason": "stop"}
    body |= {"context": [1, 2, 3], "eval_count": 4}
    chunks = [orjson.loads(line) for line in replay_ndjson(body, "generate", pieces=2)]
    assert "".join(c["response"] for c in chunks) == "Once upon a time"
    assert len(chunks) == 3
    assert chunks[-1]["done"] is True and chunks[-1]["context"] == [1, 2, 3] and chunks[-1]["response"] == ""
    assert orjson.loads(aggregate_ndjson(replay_ndjson(body, "generate"), "generate")) == body
    calls = [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}]
    tool = orjson.loads(answer(""))
    tool["message"]["tool_calls"] = calls
    chunks = [orjson.loads(line) for line in replay_ndjson(tool, "chat")]
    assert [c["message"].get("tool_calls") for c in chunks] == [calls, None]
    assert chunks[-1]["done"] is True
    empty = [orjson.loads(line) for line in replay_ndjson(orjson.loads(answer("")), "chat")]
    assert len(empty) == 1 and empty[0]["done"] is True


def test_aggregate_refuses_unfinished_or_failed_streams() -> None:
    lines = replay_ndjson(orjson.loads(answer()), "chat")
    assert aggregate_ndjson(lines[:-1], "chat") is None
    assert aggregate_ndjson([*lines[:2], b'{"error": "boom"}\n'], "chat") is None


async def test_hit_replays_its_entry() -> None:
    cache = ResponseCache(CacheConfig(), make_store(CacheConfig()))
    await cache.store(chat("q"), "web", "exact", None, answer("A short answer"))
    hit = await cache.lookup(chat("q", stream=True), "web", "exact")
    assert hit is not None
    chunks = [orjson.loads(line) for line in hit.ndjson()]
    assert "".join(c["message"]["content"] for c in chunks) == "A short answer"
