"""Gateway overhead benchmark: the same load direct to an engine and through the gateway, in one run.

    .venv/bin/python -m bench.run            # scripted engine, all phases
    .venv/bin/python -m bench.run --quick    # fewer requests
    .venv/bin/python -m bench.run --real     # also tokens/s with the real embedded engine
    .venv/bin/python -m bench.run --all      # every benchmark of docs/BENCHMARKS.md, one after the other

The gateway is pinned to core 0, the engine and this load generator to the other core(s). Every figure is
printed next to the direct figure from the same run; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import psutil
from tests.support.processes import free_port, stop, wait_http_ok

from bench.loadgen import Result, run_load

ROOT = Path(__file__).resolve().parent.parent
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def _pinned(cores: set[int]) -> Callable[[], None]:
    def apply() -> None:
        if cores:
            os.sched_setaffinity(0, cores)

    return apply


def split_cores(*, pin: bool = True) -> tuple[list[int], set[int], set[int]]:
    """This machine's cores, the one the gateway under test gets, and the rest (engines, load generator); with
    ``pin``, this process moves to the rest. On one core both sets are that core."""
    cores = sorted(os.sched_getaffinity(0))
    gateway, other = {cores[0]}, set(cores[1:]) or {cores[0]}
    if pin:
        os.sched_setaffinity(0, other)
    return cores, gateway, other


def _spawn(args: list[str], env: dict[str, str], cores: set[int]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_pinned(cores),
        start_new_session=True,
    )


def _row(name: str, direct: float, gateway: float, unit: str, target: str) -> None:
    ratio = gateway / direct if direct else float("nan")
    print(
        f"{name:<44} direct {direct:>10.3f} {unit:<6} gateway {gateway:>10.3f} {unit:<6} ratio {ratio:6.3f}  {target}"
    )


async def _phases(direct: str, gateway: str, gw_pid: int, scale: float) -> None:
    n = lambda k: max(50, int(k * scale))  # noqa: E731
    gw = psutil.Process(gw_pid)
    print(f"gateway RSS at idle after start-up: {gw.memory_info().rss / 2**20:.1f} MiB")

    async def both(path: str, payload: dict[str, object], **kw: object) -> tuple[Result, Result]:
        await run_load(direct + path, payload, concurrency=4, requests=200, max_seconds=10)  # warm-up
        await run_load(gateway + path, payload, concurrency=4, requests=200, max_seconds=10)
        d = await run_load(direct + path, payload, **kw)  # type: ignore[arg-type]
        g = await run_load(gateway + path, payload, **kw)  # type: ignore[arg-type]
        return d, g

    d, g = await both("/api/chat", CHAT, concurrency=1, requests=n(2000), max_seconds=30)
    _row(
        "non-streamed chat, c=1, p50 latency", d.p50_ms, g.p50_ms, "ms", f"added {g.p50_ms - d.p50_ms:.3f} ms (<= 1 ms)"
    )
    d, g = await both("/api/chat", CHAT, concurrency=32, requests=n(20000), max_seconds=30)
    _row("non-streamed chat, c=32, throughput", d.rps, g.rps, "req/s", "gateway >= 3000 req/s")
    print(f"{'':<44} errors direct {d.errors} gateway {g.errors}")

    stream_payload = {**CHAT, "options": {"num_predict": 8}}
    d, g = await both("/api/chat", stream_payload, concurrency=1, requests=n(1000), max_seconds=30, stream=True)
    d_ttft, g_ttft = d.pct(0.5, d.first_token) * 1000, g.pct(0.5, g.first_token) * 1000
    _row(
        "streamed chat, c=1, p50 time to first token", d_ttft, g_ttft, "ms", f"added {g_ttft - d_ttft:.3f} ms (<= 1 ms)"
    )

    paced = {**CHAT, "options": {"num_predict": 64, "fake_tokens": 64, "fake_token_ms": 1}}
    d, g = await both("/api/chat", paced, concurrency=16, requests=n(320), max_seconds=60, stream=True)
    _row("16 streams x 64 tokens @1ms, p50 stream time", d.p50_ms, g.p50_ms, "ms", "ratio ~1 (keeps up)")
    _row("16 streams x 64 tokens @1ms, lines/s", d.tokens / d.wall, g.tokens / g.wall, "tok/s", "ratio ~1")

    soak = n(30000)
    await run_load(gateway + "/api/chat", CHAT, concurrency=32, requests=soak, max_seconds=120)
    await run_load(gateway + "/api/chat", stream_payload, concurrency=16, requests=n(5000), max_seconds=60, stream=True)
    print(
        f"gateway RSS after the whole run (+{soak} soak requests): {gw.memory_info().rss / 2**20:.1f} MiB (<= 150 MiB)"
    )


async def _tokens_per_second(url: str, runs: int) -> float:
    body = {
        "model": "smollm2:135m",
        "prompt": "Write a long story about a lighthouse keeper.",
        "stream": True,
        "options": {"num_predict": 128, "temperature": 0, "seed": 1},
    }
    tokens = 0
    wall = 0.0
    async with aiohttp.ClientSession() as session:
        for _ in range(runs):
            started = time.perf_counter()
            # The same deterministic request every run: without this the gateway's cache would answer it.
            async with session.post(url + "/api/generate", json=body, headers={"X-Shared-Ollama-Cache": "off"}) as resp:
                async for line in resp.content:
                    if line.strip():
                        tokens += 1
            wall += time.perf_counter() - started
    return tokens / wall


async def _real(gateway: str, engine: str, runs: int) -> None:
    await _tokens_per_second(engine, 1)  # load the model
    direct = gateway_tps = 0.0
    for _ in range(runs):  # alternate so drift hits both sides alike
        direct += await _tokens_per_second(engine, 1)
        gateway_tps += await _tokens_per_second(gateway, 1)
    _row("real engine, streamed generate, tokens/s", direct / runs, gateway_tps / runs, "tok/s", "ratio >= 0.97")


ALL = ("parity", "prefix", "affinity", "defaults", "coldstart", "fleet", "memory")
"""The benchmarks ``--all`` runs after this module's own phases, each in a process of its own, in this order."""


def _all(quick: bool) -> int:
    """Every benchmark, one at a time (each measures its reference in its own run); the exit status of the worst."""
    worst = 0
    for name in ALL:
        print(f"\n=== bench.{name} ===", flush=True)
        args = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]
        started = time.perf_counter()
        code = subprocess.run(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False).returncode
        print(f"=== bench.{name}: exit {code} after {time.perf_counter() - started:.0f} s ===", flush=True)
        worst = max(worst, code)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests")
    parser.add_argument("--all", action="store_true", help="this module's phases (--real), then every other bench")
    parser.add_argument("--real", action="store_true", help="also measure the real embedded engine")
    parser.add_argument("--skip-scripted", action="store_true", help="only the real-engine phase")
    args = parser.parse_args()
    if args.all:
        args.real = True
    cores, gw_cores, other = split_cores()
    print(f"cores: gateway {sorted(gw_cores)}, engine + load generator {sorted(other)}")
    gw_env = {
        "SHARED_OLLAMA_ENGINE": "external",
        "SHARED_OLLAMA_LOG_LEVEL": "warning",
        # The front door's own cost is measured with admission on but out of the way: one tenant, caps and
        # slots above the load generator's concurrency.
        "SHARED_OLLAMA_MAX_INFLIGHT_TEXT": "256",
        "SHARED_OLLAMA_ENGINE_SLOTS": "64",
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if not args.skip_scripted:
            fport, gport = free_port(), free_port()
            procs.append(_spawn(["-m", "tests.support.fake_engine", "--port", str(fport)], {}, other))
            wait_http_ok(f"http://127.0.0.1:{fport}/api/version", procs[-1])
            env = {**gw_env, "SHARED_OLLAMA_OLLAMA_URL": f"http://127.0.0.1:{fport}"}
            procs.append(_spawn(["-m", "shared_ollama.cli", "serve", "--port", str(gport)], env, gw_cores))
            wait_http_ok(f"http://127.0.0.1:{gport}/api/v1/health", procs[-1])
            asyncio.run(
                _phases(
                    f"http://127.0.0.1:{fport}", f"http://127.0.0.1:{gport}", procs[-1].pid, 0.1 if args.quick else 1
                )
            )
        if args.real or args.skip_scripted:
            eport, gport = free_port(), free_port()
            procs.append(_spawn(["-m", "shared_ollama.cli", "engine", "--port", str(eport)], {}, set(cores)))
            wait_http_ok(f"http://127.0.0.1:{eport}/api/version", procs[-1])
            env = {**gw_env, "SHARED_OLLAMA_OLLAMA_URL": f"http://127.0.0.1:{eport}"}
            procs.append(_spawn(["-m", "shared_ollama.cli", "serve", "--port", str(gport)], env, gw_cores))
            wait_http_ok(f"http://127.0.0.1:{gport}/api/v1/health", procs[-1])
            asyncio.run(_real(f"http://127.0.0.1:{gport}", f"http://127.0.0.1:{eport}", 3 if args.quick else 6))
    finally:
        for proc in reversed(procs):
            stop(proc)
        os.sched_setaffinity(0, set(cores))
    if args.all:
        sys.exit(_all(args.quick))


if __name__ == "__main__":
    main()
