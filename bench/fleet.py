"""A fleet of engine hosts (issue 15): what a second host adds, and fairness across hosts, in one run.

    .venv/bin/python -m bench.fleet           # about a minute and a half
    .venv/bin/python -m bench.fleet --quick

Two scripted engines (tests/support/fake_engine.py), each answering a request in about 40 ms (8 tokens at 5 ms)
and taking any number at once, so the hosts' slots are the scarce resource. (a) The same load (32 clients) through
a gateway whose fleet is one host, then two hosts, with the same slots per host (4): completed requests/s and the
ratio (two hosts should give about 2x). (b) The fairness benchmark's 10:1 flood on two hosts with one slot each
(two slots in all, as in bench/fairness.py): the polite tenant's latency alone, then under the flood; fair sharing
predicts about 2x. The gateway is pinned to the first core, the engines and the load generator to the other(s).
Nothing asserts; every loop is bounded in requests and seconds; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.processes import free_port, stop, wait_http_ok

from bench.fairness import WORK, _line, flood
from bench.loadgen import Result, run_load
from bench.run import _spawn, split_cores

TARGET_RATIO = 1.8


@contextmanager
def _gateway(urls: list[str], slots: int, cores: set[int]) -> Iterator[str]:
    port = free_port()
    env = {
        "SHARED_OLLAMA_ENGINE_URLS": ",".join(urls),
        "SHARED_OLLAMA_ENGINE_SLOTS": str(slots),
        "SHARED_OLLAMA_LOG_LEVEL": "warning",
        "SHARED_OLLAMA_MAX_INFLIGHT_TEXT": "64",
        "SHARED_OLLAMA_MAX_QUEUE": "512",
    }
    proc = _spawn(["-m", "shared_ollama.cli", "serve", "--port", str(port)], env, cores)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/api/v1/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


async def _throughput(gateway: str, requests: int) -> Result:
    url = gateway + "/api/chat"
    await run_load(url, WORK, concurrency=32, requests=64, max_seconds=20)  # warm-up
    return await run_load(url, WORK, concurrency=32, requests=requests, max_seconds=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    _, gw_cores, other = split_cores()
    ports = [free_port(), free_port()]
    engines: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            engines.append(_spawn(["-m", "tests.support.fake_engine", "--port", str(port)], {}, other))
            wait_http_ok(f"http://127.0.0.1:{port}/api/version", engines[-1])
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        n = 400 if args.quick else 2000
        with _gateway(urls[:1], 4, gw_cores) as gateway:
            one = asyncio.run(_throughput(gateway, n))
        with _gateway(urls, 4, gw_cores) as gateway:
            two = asyncio.run(_throughput(gateway, n))
        ratio = two.rps / one.rps if one.rps else 0.0
        verdict = "met" if ratio >= TARGET_RATIO else "missed"
        print(f"fleet: one host, 4 slots     {one.rps:8.1f} req/s  (errors {one.errors})")
        print(f"fleet: two hosts, 4 slots each {two.rps:6.1f} req/s  (errors {two.errors})")
        print(f"fleet: two hosts / one host  {ratio:.2f}x (>= {TARGET_RATIO}x) {verdict}")
        with _gateway(urls, 1, gw_cores) as gateway:
            idle, loaded, flooded = asyncio.run(flood(gateway, 60 if args.quick else 300))
        print(_line("polite tenant, idle (2 hosts)", idle))
        print(_line("polite tenant, 10:1 flood", loaded))
        print(_line("flooding tenant (same time)", flooded))
        p50, p95 = loaded.pct(0.5) / idle.pct(0.5), loaded.pct(0.95) / idle.pct(0.95)
        print(f"fleet fairness: flood/idle latency p50 {p50:.2f}x, p95 {p95:.2f}x (fair sharing of 2 slots: ~2x)")
    finally:
        for proc in engines:
            stop(proc)


if __name__ == "__main__":
    main()
