"""Memory: the gateway under many cacheable requests, the engine under a soak, a derived model next to its base.

    .venv/bin/python -m bench.memory                  # (a) 100k requests, (b) 10 + 4 minutes of soak, (c): ~17 min
    .venv/bin/python -m bench.memory --quick          # (a) 20k requests, (b) 1 + 1 minute, (c): ~3 minutes
    .venv/bin/python -m bench.memory --only a,c       # some parts only; --soak-minutes N for (b)

(a) The gateway's resident memory (RSS) after ``--requests`` non-streamed chats over 10,000 distinct prompts
    with temperature 0 (cacheable: they fill the response cache to its default 10,000 entries), default settings,
    in front of the scripted engine (tests/support/fake_engine.py). Reference: its RSS at idle after start-up.
(b) The embedded engine's RSS under bench/soak.py's mixed traffic (4 tenants, three surfaces, streamed and not,
    twice the engine's capacity), read every 15 s: before the model is loaded, once it is, in the middle and at
    the end. It plateaus when the second half grew less than 10 % of the first half, or less than 4 MiB. What
    grows is llama.cpp's prompt cache (states of prompts whose slot was reused), bounded per model (by default
    5 % of the RAM, at most 1 GiB: more than this traffic fills in 10 minutes); a second soak (4 minutes, 1 in
    --quick) with a small bound (``--soak-cache-mib``, 64 MiB; 16 in --quick) shows where the growth stops.
(c) The embedded engine alone: its RSS and PSS (proportional set size: a page mapped twice counts once) growth
    when ``smollm2:135m`` is loaded, then when a model derived from it (same blob, another system prompt, through
    ``/api/create``) is loaded next to it, and the sizes the engine's ``/api/ps`` reports for both.

Nothing asserts; loopback only; every loop is bounded in requests and seconds; data in temp directories.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
from tests.support.processes import free_port, spawn, stop, wait_http_ok

from bench.run import _spawn, split_cores
from bench.soak import SLOTS, TENANTS, _client, embedded_gateway
from shared_ollama.engine.defaults import install_defaults
from shared_ollama.engine.machine import prompt_cache_mib, total_ram
from shared_ollama.settings import Settings

Row = tuple[str, str, str, str]
MIB = 2**20
GATEWAY_TARGET_MIB = 150.0
DISTINCT = 10_000
MODEL = "smollm2:135m"
DERIVED = "pirate:bench"
SAMPLE_S = 15.0


def _mib(value: float) -> str:
    return f"{value / MIB:.1f} MiB"


def _http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 120.0) -> Any:
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return orjson.loads(reply.read())


def _print(rows: list[Row]) -> None:
    for row in rows:
        print(f"{row[0]:<52} {row[1]:<34} {row[2]:<26} {row[3]}")


# ---------------------------------------------------------------- (a) the gateway and its cache


async def _cacheable_load(url: str, requests: int, concurrency: int, max_seconds: float) -> Counter[str]:
    """``requests`` chats cycling over DISTINCT prompts (temperature 0: cacheable), at most ``max_seconds``."""
    sent = [0]
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + max_seconds
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def worker() -> None:
            while sent[0] < requests and time.monotonic() < deadline:
                i = sent[0] % DISTINCT
                sent[0] += 1
                body = {
                    "model": "fake",
                    "messages": [{"role": "user", "content": f"question {i}: what is {i} plus {i}?"}],
                    "stream": False,
                    "options": {"temperature": 0, "num_predict": 8},
                }
                try:
                    async with session.post(url, data=orjson.dumps(body), headers=headers) as resp:
                        await resp.read()
                        outcomes[f"{resp.status} cache {resp.headers.get('X-Shared-Ollama-Cache', '-')}"] += 1
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    outcomes[type(exc).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


def gateway_part(requests: int) -> list[Row]:
    _, gw_cores, other = split_cores(pin=False)
    procs = []
    with tempfile.TemporaryDirectory(prefix="memory-gw-") as data:
        try:
            fport, gport = free_port(), free_port()
            procs.append(_spawn(["-m", "tests.support.fake_engine", "--port", str(fport)], {}, other))
            wait_http_ok(f"http://127.0.0.1:{fport}/api/version", procs[-1])
            env = {
                "SHARED_OLLAMA_ENGINE": "external",
                "SHARED_OLLAMA_OLLAMA_URL": f"http://127.0.0.1:{fport}",
                "SHARED_OLLAMA_DATA_DIR": data,
                # Admission out of the way of 32 clients (as bench.run); everything else at its default.
                "SHARED_OLLAMA_MAX_INFLIGHT_TEXT": "256",
                "SHARED_OLLAMA_ENGINE_SLOTS": "64",
            }
            procs.append(_spawn(["-m", "shared_ollama.cli", "serve", "--port", str(gport)], env, gw_cores))
            url = f"http://127.0.0.1:{gport}"
            wait_http_ok(f"{url}/api/v1/health", procs[-1])
            gateway = psutil.Process(procs[-1].pid)
            idle = gateway.memory_info().rss
            started = time.monotonic()
            outcomes = asyncio.run(
                _cacheable_load(f"{url}/api/chat", requests, 32, max_seconds=max(60, requests / 300))
            )
            took = time.monotonic() - started
            after = gateway.memory_info().rss
            stats = _http_json(f"{url}/api/v1/cache/stats")
        finally:
            for proc in reversed(procs):
                stop(proc)
    done = sum(outcomes.values())
    print(f"(a) {done} requests in {took:.1f} s over {DISTINCT} prompts: {dict(outcomes.most_common())}")
    print(f"    cache: {stats.get('entries')} entries, {_mib(float(stats.get('bytes') or 0))}")
    over = after / MIB - GATEWAY_TARGET_MIB
    return [
        (
            f"gateway RSS after {done / 1000:.0f}k requests, {stats.get('entries')} cache entries",
            f"idle after start-up {_mib(idle)}",
            f"{_mib(after)} (x{after / idle:.2f})",
            f"<= {GATEWAY_TARGET_MIB:.0f} MiB: " + ("met" if over <= 0 else f"missed by {over:.1f} MiB"),
        )
    ]


# ---------------------------------------------------------------- (b) the engine under a soak


def _engine_rss(gateway_pid: int) -> int:
    children = psutil.Process(gateway_pid).children(recursive=True)
    return sum(c.memory_info().rss for c in children if "engine" in c.cmdline())


async def _soak(url: str, pid: int, minutes: float) -> tuple[list[tuple[float, int]], Counter[str]]:
    clients = SLOTS * 2 * len(TENANTS)  # as bench/soak.py: each tenant alone could fill the engine twice over
    started = time.monotonic()
    end = started + minutes * 60
    outcomes: Counter[str] = Counter()
    samples: dict[str, str] = {}
    readings = [(0.0, _engine_rss(pid))]
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=clients)) as session:
        work = [
            asyncio.create_task(_client(session, url, random.Random(i), end, outcomes, samples)) for i in range(clients)
        ]
        while time.monotonic() < end:
            await asyncio.sleep(min(SAMPLE_S, max(0.0, end - time.monotonic())))  # the sampling period
            readings.append((time.monotonic() - started, _engine_rss(pid)))
        await asyncio.gather(*work)
    readings.append((time.monotonic() - started, _engine_rss(pid)))
    return readings, outcomes


def engine_soak_part(minutes: float, cache_mib: int | None) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="memory-soak-") as tmp:
        data = Path(tmp)
        env = embedded_gateway(data)
        if cache_mib is not None:
            env["SHARED_OLLAMA_ENGINE_CACHE_RAM_MIB"] = str(cache_mib)
        port = free_port()
        proc = spawn(["serve", "--host", "127.0.0.1", "--port", str(port)], env=env, log_path=data / "soak.log")
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http_ok(f"{url}/api/v1/health", proc)
            before = _engine_rss(proc.pid)
            _http_json(
                f"{url}/api/generate", {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}}
            )
            readings, outcomes = asyncio.run(_soak(url, proc.pid, minutes))
        finally:
            stop(proc)
    start, end = readings[0][1], readings[-1][1]
    middle = min(readings, key=lambda r: abs(r[0] - readings[-1][0] / 2))[1]
    first, second = middle - start, end - middle
    bound = prompt_cache_mib(cache_mib, total_ram())
    if second < max(4 * MIB, 0.1 * first):
        verdict = "plateau: met"
    elif end - start <= (bound + 64) * MIB:
        verdict = f"plateau: not yet, the prompt cache is filling ({(end - start) / MIB:.0f} of {bound} MiB)"
    else:
        verdict = f"plateau: missed (grew more than the {bound} MiB prompt cache)"
    trace = " ".join(f"{r / MIB:.0f}" for _, r in readings)
    ok = sum(c for o, c in outcomes.items() if o.startswith("200"))
    print(
        f"(b) soak {minutes:g} min, {sum(outcomes.values())} requests ({ok} answered): {dict(outcomes.most_common(4))}"
    )
    print(f"    engine RSS before any model is loaded {_mib(before)}; every {SAMPLE_S:.0f} s (MiB): {trace}")
    return [
        (
            f"engine RSS, {minutes:g}-min soak, prompt cache {bound} MiB" + (" (default)" if cache_mib is None else ""),
            f"model loaded, idle {_mib(start)}",
            f"middle {_mib(middle)}, end {_mib(end)}",
            f"{verdict} (halves +{first / MIB:.0f}, +{second / MIB:.0f} MiB)",
        )
    ]


# ---------------------------------------------------------------- (c) a derived model next to its base


def _memory(pid: int) -> tuple[int, int]:
    full = psutil.Process(pid).memory_full_info()
    return full.rss, full.pss


def _kv_cache(info: dict[str, Any], num_ctx: int, slots: int) -> float:
    """An f16 K and V cache for every slot, from the model's metadata (as the engine's own estimate)."""
    arch = info.get("general.architecture", "")
    layers = int(info.get(f"{arch}.block_count") or 0)
    heads = int(info.get(f"{arch}.attention.head_count") or 1)
    kv_heads = int(info.get(f"{arch}.attention.head_count_kv") or heads)
    width = int(info.get(f"{arch}.embedding_length") or 0)
    return 2.0 * layers * kv_heads * (width // heads) * num_ctx * slots * 2


def derived_part() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="memory-derived-") as tmp:
        data = Path(tmp)
        settings = Settings(data_dir=data, models_dir=data / "models")
        install_defaults(settings, only=[MODEL])
        env = {"SHARED_OLLAMA_DATA_DIR": str(data), "SHARED_OLLAMA_MODELS_DIR": str(data / "models")}
        port = free_port()
        proc = spawn(["engine", "--host", "127.0.0.1", "--port", str(port)], env=env, log_path=data / "engine.log")
        url = f"http://127.0.0.1:{port}"
        load = {"prompt": "", "stream": False, "keep_alive": -1}
        try:
            wait_http_ok(f"{url}/api/version", proc)
            idle = _memory(proc.pid)
            _http_json(f"{url}/api/generate", {"model": MODEL, **load})
            base = _memory(proc.pid)
            _http_json(
                f"{url}/api/create",
                {"model": DERIVED, "from": MODEL, "system": "You are a pirate.", "stream": False},
            )
            _http_json(f"{url}/api/generate", {"model": DERIVED, **load})
            both = _memory(proc.pid)
            ps = {m["name"]: m for m in _http_json(f"{url}/api/ps")["models"]}
            tags = {m["name"]: m for m in _http_json(f"{url}/api/tags")["models"]}
            shown = _http_json(f"{url}/api/show", {"model": MODEL})
        finally:
            stop(proc)
    weights = float(tags[MODEL]["size"])
    kv_estimate = _kv_cache(shown["model_info"], ps[MODEL]["context_length"], settings.engine_num_parallel)
    rss_base, pss_base = base[0] - idle[0], base[1] - idle[1]
    rss_derived, pss_derived = both[0] - base[0], both[1] - base[1]
    sizes = {name: m.get("size", 0) for name, m in ps.items()}
    shown = ", ".join(f"{k} {_mib(v)}" for k, v in sizes.items())
    print(f"(c) engine idle RSS {_mib(idle[0])}, PSS {_mib(idle[1])}; /api/ps sizes: {shown}")
    saved = pss_base - pss_derived  # what the derived load did not pay again: the mapped weights, if shared
    return [
        (
            "derived model (same blob, other system) next to its base",
            f"base's first load +{_mib(pss_base)}",
            f"+{_mib(pss_derived)} PSS ({pss_derived / pss_base:.2f}x)" if pss_base else "-",
            "< a 2nd copy of the model: " + ("met" if pss_derived < pss_base else "missed"),
        ),
        (
            "  the weights (GGUF file) shared, not copied",
            f"file {_mib(weights)}",
            f"not paid again {_mib(saved)}",
            "shared: " + ("met" if saved >= 0.8 * weights else "missed"),
        ),
        (
            "  what each load pays alone: KV cache + buffers",
            f"estimate {_mib(kv_estimate)}",
            f"{_mib(pss_derived)}",
            "-",
        ),
        ("  the same as RSS (a page mapped twice counts twice)", f"+{_mib(rss_base)}", f"+{_mib(rss_derived)}", "-"),
        (
            "  /api/ps size (the engine's measure of each load)",
            _mib(sizes.get(MODEL, 0)),
            _mib(sizes.get(DERIVED, 0)),
            "-",
        ),
    ]


def run(
    quick: bool = False,
    *,
    only: str = "abc",
    requests: int | None = None,
    soak_minutes: float | None = None,
    soak_cache_mib: int | None = None,
) -> list[Row]:
    rows: list[Row] = []
    if "a" in only:
        rows += gateway_part(requests or (20_000 if quick else 100_000))
    if "b" in only:
        rows += engine_soak_part(soak_minutes if soak_minutes is not None else 1.0 if quick else 10.0, None)
        # The same with a bound this traffic fills within minutes: where the default's growth levels off.
        small = soak_cache_mib if soak_cache_mib is not None else 16 if quick else 64
        rows += engine_soak_part(1.0 if quick else 4.0, small)
    if "c" in only:
        rows += derived_part()
    print("memory")
    _print(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k requests, soaks of 1 + 1 minutes")
    parser.add_argument("--only", default="abc", help="the parts to run: a, b and/or c (default: all)")
    parser.add_argument("--requests", type=int, help="requests of part (a) (default 100,000; quick 20,000)")
    parser.add_argument("--soak-minutes", type=float, help="length of (b)'s first soak, default bound (10; quick 1)")
    parser.add_argument("--soak-cache-mib", type=int, help="the small prompt-cache bound of (b)'s second soak (64)")
    args = parser.parse_args()
    run(
        args.quick,
        only=args.only,
        requests=args.requests,
        soak_minutes=args.soak_minutes,
        soak_cache_mib=args.soak_cache_mib,
    )


if __name__ == "__main__":
    main()
