"""Headroom of one gateway process: what it passes against what the engine behind it serves, in one run.

    .venv/bin/python -m bench.headroom           # about 5 minutes; runs the real engine: nothing else should
    .venv/bin/python -m bench.headroom --quick   # about 2 minutes       be generating on the machine meanwhile

1. The gateway: non-streamed chat at concurrency 32 through one ``shared-ollama serve`` pinned to one core, in
   front of the scripted engine (answers at once), so the process itself is the bottleneck (as in bench.run).
2. The engine: the real embedded engine with ``smollm2:135m`` on every core, short greedy generations
   (``num_predict`` 16) at concurrency = its slots, direct and through a gateway; and ``all-minilm``
   embeddings of one sentence, direct.

The ratio of (1) to (2) is how far one process is from being what limits the service. Nothing asserts; the
figures go in docs/OPERATIONS.md. Every loop is bounded in requests and seconds, on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import psutil
from tests.support.processes import free_port, stop, wait_http_ok

from bench.loadgen import run_load
from bench.run import CHAT, _spawn
from shared_ollama.engine.defaults import install_defaults
from shared_ollama.settings import Settings

SLOTS = 4
ASKS = ("Capital of France?", "Name a colour.", "Count to five.", "Say hello.", "What is two plus two?", "Hi!")
GATEWAY_ENV = {
    "SHARED_OLLAMA_ENGINE": "external",
    "SHARED_OLLAMA_LOG_LEVEL": "warning",
    # Admission on but out of the way: one tenant, its cap and the slots above the load's concurrency.
    "SHARED_OLLAMA_MAX_INFLIGHT_TEXT": "256",
    "SHARED_OLLAMA_ENGINE_SLOTS": "64",
}


@dataclass
class Served:
    answered: int = 0
    errors: int = 0
    generated: int = 0
    wall: float = 0.0

    def __iadd__(self, other: Served) -> Served:
        self.answered += other.answered
        self.errors += other.errors
        self.generated += other.generated
        self.wall += other.wall
        return self

    @property
    def rps(self) -> float:
        return self.answered / self.wall if self.wall else 0.0

    @property
    def tps(self) -> float:
        return self.generated / self.wall if self.wall else 0.0


async def _serve_load(url: str, bodies: list[bytes], concurrency: int, requests: int, max_seconds: float) -> Served:
    """``requests`` non-streamed requests (cycling through ``bodies``) by ``concurrency`` workers, at most
    ``max_seconds``; counts the engine's own ``eval_count``."""
    served = Served()
    sent = [0]
    deadline = time.perf_counter() + max_seconds
    headers = {"Content-Type": "application/json", "X-Shared-Ollama-Cache": "off"}
    timeout = aiohttp.ClientTimeout(total=max(120.0, max_seconds))
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while sent[0] < requests and time.perf_counter() < deadline:
                body = bodies[sent[0] % len(bodies)]
                sent[0] += 1
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        data = await resp.read()
                except (aiohttp.ClientError, OSError):
                    served.errors += 1
                    continue
                if resp.status != 200:
                    served.errors += 1
                    continue
                served.answered += 1
                served.generated += int(orjson.loads(data).get("eval_count") or 0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        served.wall = time.perf_counter() - started
    return served


def _generate_bodies() -> list[bytes]:
    options = {"num_predict": 16, "temperature": 0, "seed": 1}
    return [orjson.dumps({"model": "smollm2:135m", "prompt": a, "stream": False, "options": options}) for a in ASKS]


def _embed_bodies() -> list[bytes]:
    return [orjson.dumps({"model": "all-minilm", "input": [a]}) for a in ASKS]


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, {ram:.1f} GiB RAM, Python {platform.python_version()}; load {load}"


def _gateway_phase(cores: list[int], quick: bool) -> float:
    gw_cores, other = {cores[0]}, set(cores[1:]) or {cores[0]}
    os.sched_setaffinity(0, other)
    procs = []
    try:
        fport, gport = free_port(), free_port()
        procs.append(_spawn(["-m", "tests.support.fake_engine", "--port", str(fport)], {}, other))
        wait_http_ok(f"http://127.0.0.1:{fport}/api/version", procs[-1])
        env = {**GATEWAY_ENV, "SHARED_OLLAMA_OLLAMA_URL": f"http://127.0.0.1:{fport}"}
        with tempfile.TemporaryDirectory() as data:
            env["SHARED_OLLAMA_DATA_DIR"] = data
            procs.append(_spawn(["-m", "shared_ollama.cli", "serve", "--port", str(gport)], env, gw_cores))
            wait_http_ok(f"http://127.0.0.1:{gport}/api/v1/health", procs[-1])
            url = f"http://127.0.0.1:{gport}/api/chat"
            asyncio.run(run_load(url, CHAT, concurrency=4, requests=500, max_seconds=10))  # warm-up
            n, seconds = (2000, 10) if quick else (20000, 30)
            result = asyncio.run(run_load(url, CHAT, concurrency=32, requests=n, max_seconds=seconds))
            stop(procs.pop())
            # The scripted engine alone, the same load: the machine's speed, to compare runs on other machines.
            alone = asyncio.run(
                run_load(f"http://127.0.0.1:{fport}/api/chat", CHAT, concurrency=32, requests=n, max_seconds=seconds)
            )
    finally:
        for proc in reversed(procs):
            stop(proc)
        os.sched_setaffinity(0, set(cores))
    print(
        f"one gateway process (core {cores[0]}), scripted engine, non-streamed chat, c=32: "
        f"{result.rps:,.0f} req/s ({result.count} answered, {result.errors} errors); "
        f"the scripted engine alone: {alone.rps:,.0f} req/s"
    )
    return result.rps


def _engine_phase(cores: list[int], quick: bool) -> tuple[Served, Served, Served]:
    procs = []
    rounds, n, seconds = (1, 24, 30) if quick else (3, 32, 30)
    with tempfile.TemporaryDirectory() as root:
        store = Path(root) / "models"
        install_defaults(Settings(_env_file=None, data_dir=Path(root), models_dir=store))
        env = {"SHARED_OLLAMA_MODELS_DIR": str(store), "SHARED_OLLAMA_DATA_DIR": root}
        try:
            eport, gport = free_port(), free_port()
            engine_env = {**env, "SHARED_OLLAMA_ENGINE_NUM_PARALLEL": str(SLOTS)}
            procs.append(_spawn(["-m", "shared_ollama.cli", "engine", "--port", str(eport)], engine_env, set(cores)))
            wait_http_ok(f"http://127.0.0.1:{eport}/api/version", procs[-1])
            engine = f"http://127.0.0.1:{eport}"
            gw_env = {**env, **GATEWAY_ENV, "SHARED_OLLAMA_OLLAMA_URL": engine}
            procs.append(_spawn(["-m", "shared_ollama.cli", "serve", "--port", str(gport)], gw_env, set(cores)))
            wait_http_ok(f"http://127.0.0.1:{gport}/api/v1/health", procs[-1])
            gateway = f"http://127.0.0.1:{gport}"
            gen, emb = _generate_bodies(), _embed_bodies()
            asyncio.run(_serve_load(engine + "/api/generate", gen, SLOTS, SLOTS * 2, 60))  # load the model
            asyncio.run(_serve_load(engine + "/api/embed", emb, SLOTS, SLOTS * 2, 60))
            direct, through = Served(), Served()
            for _ in range(rounds):  # alternated, so the other work on the machine weighs on both alike
                direct += asyncio.run(_serve_load(engine + "/api/generate", gen, SLOTS, n, seconds))
                through += asyncio.run(_serve_load(gateway + "/api/generate", gen, SLOTS, n, seconds))
            embed = asyncio.run(_serve_load(engine + "/api/embed", emb, SLOTS, n * 30, seconds))
        finally:
            for proc in reversed(procs):
                stop(proc)
    print(
        f"real engine (smollm2:135m, all {len(cores)} cores, {SLOTS} slots), generate num_predict=16, "
        f"c={SLOTS}, direct: {direct.rps:.2f} req/s, {direct.tps:.1f} generated tok/s "
        f"({direct.answered} answered, {direct.errors} errors)"
    )
    ratio = through.rps / direct.rps if direct.rps else float("nan")
    print(
        f"  the same through a gateway: {through.rps:.2f} req/s, {through.tps:.1f} tok/s (ratio {ratio:.3f}; "
        f"{through.errors} errors)"
    )
    print(
        f"real engine (all-minilm), embed one sentence, c={SLOTS}, direct: {embed.rps:.1f} req/s "
        f"({embed.answered} answered, {embed.errors} errors)"
    )
    return direct, through, embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter phases")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    print(f"machine: {_machine()}")
    gateway_rps = _gateway_phase(cores, args.quick)
    direct, _, embed = _engine_phase(cores, args.quick)
    if direct.rps and embed.rps:
        print(
            f"headroom: one gateway process passes {gateway_rps / direct.rps:,.0f}x the short generations and "
            f"{gateway_rps / embed.rps:,.0f}x the embeddings this engine serves"
        )
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
