"""Where the gateway's CPU goes with the settings users run: a py-spy profile under load, summed by layer.

    .venv/bin/python -m bench.profile              # about 30 seconds
    .venv/bin/python -m bench.profile --seconds 20

The gateway of bench/defaults.py (access log, auth with three tenants, cache, analytics and metrics on) in front
of the scripted engine, non-streamed chats at concurrency 32, sampled by py-spy (``--nonblocking``: the gateway
is never paused) for ``--seconds``. Printed: the samples' share per layer (the service's own code, the web
framework, the HTTP server, the engine client, asyncio, logging, ...) by the frame that was running (self
time), and the heaviest functions. What bench/defaults.py measures tells how much; this tells where. Nothing
asserts; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.processes import free_port, stop, wait_http_ok

from bench.defaults import AUTH, CHAT, TENANTS_YAML
from bench.loadgen import run_load
from bench.run import _spawn, split_cores

LAYERS = (  # the first whose marker is in a frame's file names its layer
    ("shared_ollama", "the service's own code"),
    ("uvicorn/", "HTTP server (uvicorn, httptools)"),
    ("httptools/", "HTTP server (uvicorn, httptools)"),
    ("starlette/", "web framework (starlette, fastapi)"),
    ("fastapi/", "web framework (starlette, fastapi)"),
    ("pydantic", "validation (pydantic)"),
    ("aiohttp/", "engine client (aiohttp)"),
    ("prometheus_client/", "metrics (prometheus_client)"),
    ("logging/", "logging"),
    ("asyncio/", "asyncio event loop"),
    ("uvloop/", "asyncio event loop"),
    ("orjson", "JSON (orjson)"),
)


def _layer(frame: str) -> str:
    for marker, name in LAYERS:
        if marker in frame:
            return name
    return "other (stdlib, selectors, sockets)"


def summarise(raw: str, top: int = 15) -> list[str]:
    """py-spy's raw (collapsed) stacks -> lines: share of samples per layer and per function (self time)."""
    layers: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.split(";")[-1]
        samples = int(count)
        total += samples
        layers[_layer(leaf)] += samples
        functions[leaf] += samples
    if not total:
        return ["no samples (is py-spy allowed to read the process? it needs ptrace)"]
    out = [f"{total} samples; by layer (self time):"]
    out += [f"  {100 * n / total:5.1f} %  {name}" for name, n in layers.most_common()]
    out.append(f"heaviest {top} functions (self time):")
    out += [f"  {100 * n / total:5.1f} %  {name}" for name, n in functions.most_common(top)]
    return out


async def _load(url: str, seconds: float) -> None:
    await run_load(url, CHAT, concurrency=32, requests=10**6, max_seconds=seconds, headers=AUTH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long py-spy samples (default 10)")
    args = parser.parse_args()
    spy = Path(sys.executable).with_name("py-spy")
    cores, gw_cores, other = split_cores()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        try:
            tenants = Path(tmp) / "tenants.yaml"
            tenants.write_text(TENANTS_YAML)
            fport, gport = free_port(), free_port()
            procs.append(_spawn(["-m", "tests.support.fake_engine", "--port", str(fport)], {}, other))
            wait_http_ok(f"http://127.0.0.1:{fport}/api/version", procs[-1])
            env = {
                "SHARED_OLLAMA_ENGINE": "external",
                "SHARED_OLLAMA_OLLAMA_URL": f"http://127.0.0.1:{fport}",
                "SHARED_OLLAMA_ENGINE_SLOTS": "64",
                "SHARED_OLLAMA_DATA_DIR": f"{tmp}/data",
                "SHARED_OLLAMA_TENANTS_FILE": str(tenants),
            }
            procs.append(_spawn(["-m", "shared_ollama.cli", "serve", "--port", str(gport)], env, gw_cores))
            wait_http_ok(f"http://127.0.0.1:{gport}/api/v1/health", procs[-1])
            url = f"http://127.0.0.1:{gport}/api/chat"
            asyncio.run(run_load(url, CHAT, concurrency=32, requests=2000, max_seconds=20, headers=AUTH))  # warm-up
            out = Path(tmp) / "profile.txt"
            record = [str(spy), "record", "--nonblocking", "--format", "raw", "-r", "250"]
            record += ["-d", str(int(args.seconds)), "-p", str(procs[-1].pid), "-o", str(out)]
            sampler = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            asyncio.run(_load(url, args.seconds + 2))
            _, err = sampler.communicate(timeout=args.seconds + 60)
            if sampler.returncode != 0:
                print(f"py-spy failed: {err.decode(errors='replace').strip()}")
                return
            print("\n".join(summarise(out.read_text())))
        finally:
            for proc in reversed(procs):
                stop(proc)
            os.sched_setaffinity(0, set(cores))


if __name__ == "__main__":
    main()
