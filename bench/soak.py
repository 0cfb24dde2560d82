"""Soak: the real gateway and embedded engine at twice their capacity, several tenants, for minutes.

    .venv/bin/python -m bench.soak                 # 10 minutes, 4 tenants
    .venv/bin/python -m bench.soak --minutes 2     # shorter
    .venv/bin/python -m bench.soak --minutes 4 --cache-ram-mib 64   # a small prompt-cache bound: the plateau

Prints the resident memory of the gateway and of the engine at the start, the middle and the end, and the
outcomes by status and code; every rejection must be structured (a JSON body with a ``code``). Not a test:
nothing asserts, the figures go in docs/STABILITY_PLAN.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import psutil
from tests.support.processes import free_port, spawn, stop, wait_http_ok

from shared_ollama.engine.defaults import install_defaults
from shared_ollama.settings import Settings

SLOTS = 2
TENANTS = ("web", "batch", "agent", "notebook")
ASKS = ("Capital of France?", "Name a colour.", "Count to five.", "Say hello.", "What is two plus two?")


def embedded_gateway(data: Path, *, slots: int = SLOTS, cache: bool = False) -> dict[str, str]:
    """The offline models installed under ``data``, and the environment of a gateway there with its own embedded
    engine (``slots`` slots, logs at warning; the response cache off unless ``cache``)."""
    install_defaults(Settings(data_dir=data, models_dir=data / "models"))
    env = {
        "SHARED_OLLAMA_DATA_DIR": str(data),
        "SHARED_OLLAMA_MODELS_DIR": str(data / "models"),
        "SHARED_OLLAMA_ENGINE": "embedded",
        "SHARED_OLLAMA_ENGINE_NUM_PARALLEL": str(slots),
        "SHARED_OLLAMA_LOG_LEVEL": "warning",
    }
    if not cache:
        env["SHARED_OLLAMA_CACHE_ENABLED"] = "false"
    return env


def _rss_mib(pid: int) -> tuple[float, float]:
    """(gateway, engine) resident memory in MiB: the gateway is ``pid``, the engine its child process."""
    gateway = psutil.Process(pid)
    children = gateway.children(recursive=True)
    engine = sum(c.memory_info().rss for c in children if "engine" in " ".join(c.cmdline()))
    return gateway.memory_info().rss / 2**20, engine / 2**20


async def _client(
    session: aiohttp.ClientSession,
    url: str,
    rng: random.Random,
    until: float,
    outcomes: Counter[str],
    samples: dict[str, str],
) -> None:
    while time.monotonic() < until:
        tenant = rng.choice(TENANTS)
        path = rng.choice(("/api/chat", "/v1/chat/completions", "/api/v1/chat"))
        stream = rng.random() < 0.5
        body = {
            "model": "smollm2:135m",
            "messages": [{"role": "user", "content": rng.choice(ASKS)}],
            "stream": stream,
            "options": {"num_predict": 48, "seed": rng.randrange(1 << 30)},
        }
        if path == "/v1/chat/completions":
            options = body.pop("options")
            body.update(max_tokens=48, seed=options["seed"])  # type: ignore[index]
        headers = {"X-Shared-Ollama-Project": tenant, "Content-Type": "application/json"}
        sent = time.monotonic()
        try:
            async with session.post(url + path, data=orjson.dumps(body), headers=headers) as resp:
                raw = await resp.read()
                if resp.status == 200:
                    outcomes["200 ok"] += 1
                    continue
                try:
                    parsed = orjson.loads(raw)
                    error = parsed.get("error")
                    code = error.get("code") if isinstance(error, dict) else parsed.get("code")
                except (orjson.JSONDecodeError, AttributeError):
                    code = None
                outcome = f"{resp.status} {code or 'UNSTRUCTURED'}"
                outcomes[outcome] += 1
                took = time.monotonic() - sent
                samples.setdefault(outcome, f"{path} after {took:.1f} s: {raw[:160].decode(errors='replace')}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcomes[f"client error {type(exc).__name__}"] += 1


async def _soak(url: str, pid: int, minutes: float) -> None:
    clients = SLOTS * 2 * len(TENANTS)  # each tenant alone could fill the engine twice over
    started = time.monotonic()
    end = started + minutes * 60
    outcomes: Counter[str] = Counter()
    samples: dict[str, str] = {}
    rss = [("start", *_rss_mib(pid))]
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=clients)) as session:
        work = [
            asyncio.create_task(_client(session, url, random.Random(i), end, outcomes, samples)) for i in range(clients)
        ]
        await asyncio.sleep(minutes * 30)  # the middle of the run, for the second reading
        rss.append(("middle", *_rss_mib(pid)))
        await asyncio.gather(*work)
    rss.append(("end", *_rss_mib(pid)))
    elapsed = time.monotonic() - started
    print(f"soak: {clients} clients, {len(TENANTS)} tenants, {SLOTS} engine slots, {elapsed / 60:.1f} min")
    for when, gateway, engine in rss:
        print(f"  RSS {when:<7} gateway {gateway:8.1f} MiB   engine {engine:8.1f} MiB")
    total = sum(outcomes.values())
    for outcome, count in outcomes.most_common():
        print(f"  {outcome:<40} {count:>7}  ({count / total:6.1%})")
    for outcome, sample in samples.items():
        print(f"  e.g. {outcome}: {sample}")
    unstructured = sum(c for o, c in outcomes.items() if o.endswith("UNSTRUCTURED"))
    print(f"  unstructured rejections: {unstructured}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--cache-ram-mib", type=int, help="bound of llama.cpp's prompt cache (default: the engine's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        data = Path(tmp)
        env = embedded_gateway(data)
        port = free_port()
        if args.cache_ram_mib is not None:
            env["SHARED_OLLAMA_ENGINE_CACHE_RAM_MIB"] = str(args.cache_ram_mib)
        proc = spawn(["serve", "--host", "127.0.0.1", "--port", str(port)], env=env, log_path=data / "soak.log")
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http_ok(f"{url}/api/v1/health", proc)
            asyncio.run(_soak(url, proc.pid, args.minutes))
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
