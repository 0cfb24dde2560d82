"""Fairness benchmark: one tenant floods the service 10:1; how long does the other tenant wait?

    .venv/bin/python -m bench.fairness           # about a minute
    .venv/bin/python -m bench.fairness --quick

A scripted engine answers each request in about 40 ms; the gateway sends it at most 2 at once (the scarce
resource). Phase 1 measures the polite tenant alone on an idle service. Phase 2 repeats its load while the
flooding tenant keeps ten times as many requests in flight. Printed: the polite tenant's p50/p95 latency
and queue wait in both phases, and their ratio. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio

from tests.support.processes import free_port, stop, wait_http_ok

from bench.loadgen import Result, run_load
from bench.run import _spawn, split_cores

WORK = {
    "model": "fake",
    "messages": [{"role": "user", "content": "hi"}],
    "options": {"num_predict": 8, "fake_token_ms": 5},
}


def _line(label: str, r: Result) -> str:
    return (
        f"{label:<28} n={r.count:<5} latency p50 {r.pct(0.5) * 1000:7.1f} ms  p95 {r.pct(0.95) * 1000:7.1f} ms   "
        f"queue wait p50 {r.pct(0.5, r.queue_waits) * 1000:7.1f} ms  p95 {r.pct(0.95, r.queue_waits) * 1000:7.1f} ms"
        f"  errors {r.errors}"
    )


async def flood(gateway: str, requests: int) -> tuple[Result, Result, Result]:
    """The polite tenant alone, then under the 10:1 flood, and the flooding tenant meanwhile."""
    url = gateway + "/api/chat"
    polite = {"X-Shared-Ollama-Project": "polite"}
    flooding_tenant = {"X-Shared-Ollama-Project": "flood"}
    await run_load(url, WORK, concurrency=2, requests=20, max_seconds=10, headers=polite)  # warm-up
    idle = await run_load(url, WORK, concurrency=2, requests=requests, max_seconds=60, headers=polite)
    flooding = asyncio.create_task(
        run_load(url, WORK, concurrency=20, requests=requests * 40, max_seconds=120, headers=flooding_tenant)
    )
    await asyncio.sleep(1.0)  # let the flood fill the queue before measuring (a benchmark, not a test)
    loaded = await run_load(url, WORK, concurrency=2, requests=requests, max_seconds=60, headers=polite)
    return idle, loaded, await flooding


async def _measure(gateway: str, requests: int) -> None:
    idle, loaded, flooded = await flood(gateway, requests)
    print(_line("polite tenant, idle service", idle))
    print(_line("polite tenant, 10:1 flood", loaded))
    print(_line("flooding tenant (same time)", flooded))
    fair_share = 2 * idle.pct(0.5)  # two slots shared by two tenants: about one slot each
    p50, p95 = loaded.pct(0.5) / idle.pct(0.5), loaded.pct(0.95) / idle.pct(0.95)
    print(
        f"ratio flood/idle: latency p50 {p50:.2f}x, p95 {p95:.2f}x"
        f"  (fair sharing of 2 slots predicts about 2x, i.e. p50 near {fair_share * 1000:.0f} ms;"
        f" first-come-first-served would put the polite tenant behind ~20 queued requests)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    _, gw_cores, other = split_cores()
    fport, gport = free_port(), free_port()
    procs = [_spawn(["-m", "tests.support.fake_engine", "--port", str(fport)], {}, other)]
    try:
        wait_http_ok(f"http://127.0.0.1:{fport}/api/version", procs[0])
        env = {
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": f"http://127.0.0.1:{fport}",
            "SHARED_OLLAMA_LOG_LEVEL": "warning",
            "SHARED_OLLAMA_ENGINE_SLOTS": "2",
            "SHARED_OLLAMA_MAX_INFLIGHT_TEXT": "32",
        }
        procs.append(_spawn(["-m", "shared_ollama.cli", "serve", "--port", str(gport)], env, gw_cores))
        wait_http_ok(f"http://127.0.0.1:{gport}/api/v1/health", procs[-1])
        asyncio.run(_measure(f"http://127.0.0.1:{gport}", 60 if args.quick else 300))
    finally:
        for proc in reversed(procs):
            stop(proc)


if __name__ == "__main__":
    main()
