"""Response cache benchmark: the in-memory semantic index and the exact path.

    .venv/bin/python -m bench.cache
    .venv/bin/python -m bench.cache --sizes 10000 100000 --runs 200

Printed: the median and p95 time of one nearest-neighbour search in one context holding N random 384-dim unit
vectors (the memory index: one matrix-vector product), the time to add them; then the exact path: computing
a key for a short chat request, ``MemoryStore.get`` (a hit) and ``put``, and a whole ``ResponseCache.lookup``
hit. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

import numpy as np
import orjson

from shared_ollama.service.cache.memory_store import Entry, MemoryStore, VectorIndex
from shared_ollama.service.cache.response import CacheConfig, ResponseCache, cache_key

DIM = 384


def _timed(fn: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


async def _timed_async(fn: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()  # type: ignore[misc]
        times.append(time.perf_counter() - started)
    return times


def _line(label: str, times: list[float]) -> str:
    ordered = sorted(times)
    p50 = statistics.median(ordered) * 1e6
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1e6
    return f"{label:<48} p50 {p50:10.1f} us   p95 {p95:10.1f} us   ({len(times)} runs)"


def semantic(sizes: list[int], runs: int) -> None:
    rng = np.random.default_rng(0)
    for size in sizes:
        vectors = rng.standard_normal((size, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index = VectorIndex()
        started = time.perf_counter()
        for i, vec in enumerate(vectors):
            index.add("ctx", vec, f"k{i}")
        added = time.perf_counter() - started
        queries = rng.standard_normal((runs, DIM)).astype(np.float32)
        it = iter(queries)
        times = _timed(lambda index=index, it=it: index.nearest("ctx", next(it)), runs)
        print(_line(f"semantic nearest, {size:>7,} vectors x {DIM}", times))
        print(f"{'':<48} add: {added / size * 1e6:.1f} us per vector, {size * DIM * 4 / 2**20:.0f} MiB of matrix")


async def exact(runs: int) -> None:
    request = {
        "model": "smollm2:135m",
        "messages": [
            {"role": "system", "content": "You answer in one sentence."},
            {"role": "user", "content": "What is the capital of France? " * 8},
        ],
        "options": {"temperature": 0, "num_ctx": 4096},
    }
    print(
        _line(
            "cache_key (short chat request)",
            _timed(lambda: cache_key(request, tenant="web", scope="tenant", model_digest="sha256:ab"), runs),
        )
    )
    body = orjson.dumps(
        {"model": "m", "message": {"role": "assistant", "content": "x" * 2000}, "done": True, "done_reason": "stop"}
    )
    store = MemoryStore(max_entries=10_000, max_bytes=256 * 2**20, ttl_seconds=3600)
    keys = [f"{i:064x}" for i in range(10_000)]
    it = iter(keys * 2)
    entry = Entry(body, "m", "web", "chat", time.time())
    print(
        _line(
            "MemoryStore.put (10k entries, 2 KB bodies)",
            await _timed_async(lambda: store.put(next(it), entry), len(keys)),
        )
    )
    it = iter(keys * (runs // len(keys) + 2))
    print(_line("MemoryStore.get (hit)", await _timed_async(lambda: store.get(next(it)), runs)))
    cache = ResponseCache(CacheConfig(), MemoryStore(10_000, 256 * 2**20, 3600))
    await cache.store(request, "web", "exact", "sha256:ab", body)
    times = await _timed_async(lambda: cache.lookup(request, "web", "exact", "sha256:ab"), runs)
    print(_line("ResponseCache.lookup (exact hit, key included)", times))


async def _through(url: str, requests: int) -> None:
    """A deterministic chat through the gateway: misses (cache off) vs hits, same request, same run."""
    from bench.loadgen import run_load

    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "hi"}],
        "options": {"temperature": 0, "num_predict": 16, "fake_tokens": 16, "fake_token_ms": 2},
    }
    await run_load(url + "/api/chat", body, concurrency=1, requests=5, max_seconds=10)  # stores the entry
    miss = await run_load(
        url + "/api/chat",
        body,
        concurrency=1,
        requests=requests,
        max_seconds=60,
        headers={"X-Shared-Ollama-Cache": "off"},
    )
    hit = await run_load(url + "/api/chat", body, concurrency=1, requests=requests, max_seconds=60)
    print(
        f"through the gateway, engine answering in ~35 ms: miss p50 {miss.p50_ms:.3f} ms, "
        f"exact hit p50 {hit.p50_ms:.3f} ms, ratio {hit.p50_ms / miss.p50_ms:.4f}"
    )


def gateway(requests: int) -> None:
    from tests.support.processes import free_port, stop, wait_http_ok

    from bench.run import _spawn

    fport, gport = free_port(), free_port()
    procs = [_spawn(["-m", "tests.support.fake_engine", "--port", str(fport)], {}, set())]
    try:
        wait_http_ok(f"http://127.0.0.1:{fport}/api/version", procs[0])
        env = {
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": f"http://127.0.0.1:{fport}",
            "SHARED_OLLAMA_LOG_LEVEL": "warning",
        }
        procs.append(_spawn(["-m", "shared_ollama.cli", "serve", "--port", str(gport)], env, set()))
        wait_http_ok(f"http://127.0.0.1:{gport}/api/v1/health", procs[-1])
        asyncio.run(_through(f"http://127.0.0.1:{gport}", requests))
    finally:
        for proc in reversed(procs):
            stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--gateway", action="store_true", help="also: exact hits vs misses through the gateway")
    args = parser.parse_args()
    semantic(args.sizes, args.runs)
    asyncio.run(exact(max(args.runs, 1000)))
    if args.gateway:
        gateway(200)


if __name__ == "__main__":
    main()
