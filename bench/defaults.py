"""The gateway with the settings users run (issue 17, target 4), against the engine direct, in one run.

    .venv/bin/python -m bench.defaults            # about 2 minutes
    .venv/bin/python -m bench.defaults --quick    # under a minute

Like ``bench.run``: the scripted engine (tests/support/fake_engine.py) answers at once, so the gateway's own cost
shows; the gateways are pinned to the first core, the engine and this load generator to the other(s). Unlike it,
the gateway under test runs with the defaults: the access log on (level info, to stderr and
``<data_dir>/logs/api.log``), auth on with three tenants in a tenants file (the load sends one tenant's key), the
response cache on (the load's requests are not deterministic, so they are looked at and passed on, as most
traffic is), analytics and metrics on. Only what a 32-way load needs is sized to it, as an operator would: the
loaded tenant's in-flight cap and the engine's slots. A second gateway with ``bench.run``'s tuned settings (logs
at warning, auth off) is measured in the same run as the reference for the CPU per request.

Printed: non-streamed chat at c=1 (added p50), the OpenAI stream's time to first token at c=1, non-streamed
chat at c=32 (req/s, and the gateway's CPU per request from psutil), long OpenAI streams (the gateway's CPU per
SSE chunk, with native NDJSON pass-through as the reference) and a micro-benchmark of the per-chunk code path in
this process. Nothing asserts; every loop is bounded in requests and seconds; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil
from tests.support.processes import free_port, stop, wait_http_ok

from bench.headroom import _machine
from bench.loadgen import Result, run_load
from bench.run import _spawn, split_cores

Row = tuple[str, str, str, str]
KEY = "bench-web-key-0123456789"
TENANTS_YAML = f"""tenants:
  - name: ops
    role: admin
    keys: ["bench-admin-key-0123456789"]
  - name: web
    keys: ["{KEY}"]
    limits:
      max_inflight_text: 64
  - name: batch
    keys: ["bench-batch-key-0123456789"]
"""
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGES = [{"role": "user", "content": "hi"}]
CHAT: dict[str, object] = {"model": "fake", "messages": MESSAGES, "options": {"num_predict": 8}}
OPENAI_SHORT: dict[str, object] = {"model": "fake", "messages": MESSAGES, "max_tokens": 8}
LONG_TOKENS = 256
TUNED_ENV = {  # bench.run's gateway: logs at warning, auth off, one tenant, admission out of the load's way
    "SHARED_OLLAMA_LOG_LEVEL": "warning",
    "SHARED_OLLAMA_MAX_INFLIGHT_TEXT": "256",
}


@dataclass(frozen=True)
class Scale:
    c1: int
    c32: int
    c32_seconds: float
    ttft: int
    streams: int
    micro: int


FULL = Scale(c1=2000, c32=12000, c32_seconds=25, ttft=1000, streams=160, micro=100_000)
QUICK = Scale(c1=300, c32=2000, c32_seconds=6, ttft=200, streams=32, micro=20_000)


@dataclass(frozen=True)
class Gateway:
    url: str
    proc: psutil.Process
    headers: dict[str, str]

    def cpu(self) -> float:
        times = self.proc.cpu_times()
        return float(times.user + times.system)


def _verdict(ok: bool, target: str, miss: str) -> str:
    return f"{target}: {'met' if ok else 'MISSED by ' + miss}"


async def _load(url: str, payload: dict[str, object], **kw: object) -> Result:
    return await run_load(url, payload, **kw)  # type: ignore[arg-type]


async def _c32(gateway: Gateway, scale: Scale) -> tuple[Result, float]:
    """Non-streamed chat at c=32 through ``gateway``; (the load's result, its CPU ms per answered request)."""
    before = gateway.cpu()
    result = await _load(gateway.url + "/api/chat", CHAT, concurrency=32, requests=scale.c32,
                         max_seconds=scale.c32_seconds, headers=gateway.headers)  # fmt: skip
    return result, (gateway.cpu() - before) * 1000 / max(1, result.count)


async def _phases(direct: str, gw: Gateway, tuned: Gateway, scale: Scale) -> list[Row]:
    rows: list[Row] = []
    for url, auth in ((direct, {}), (gw.url, AUTH), (tuned.url, {})):  # warm-up: connections, label sets, paths
        await _load(url + "/api/chat", CHAT, concurrency=4, requests=300, max_seconds=10, headers=auth)
        await _load(url + "/api/chat", CHAT, concurrency=2, requests=100, max_seconds=10, stream=True, headers=auth)
    await _load(gw.url + "/v1/chat/completions", OPENAI_SHORT, concurrency=2, requests=100, max_seconds=10,
                stream=True, headers=AUTH)  # fmt: skip

    # 1. Non-streamed chat, c=1: what the gateway adds to every answer.
    d = await _load(direct + "/api/chat", CHAT, concurrency=1, requests=scale.c1, max_seconds=30)
    g = await _load(gw.url + "/api/chat", CHAT, concurrency=1, requests=scale.c1, max_seconds=30, headers=AUTH)
    added = g.p50_ms - d.p50_ms
    rows.append(("non-streamed chat, c=1, p50", f"direct {d.p50_ms:.3f} ms",
                 f"gateway {g.p50_ms:.3f} ms (+{added:.3f} ms)",
                 _verdict(added <= 0.6, "added <= 0.6 ms", f"{added - 0.6:.3f} ms")))  # fmt: skip

    # 2. OpenAI stream, c=1: time to the first SSE event against the engine's first NDJSON line.
    d = await _load(direct + "/api/chat", CHAT, concurrency=1, requests=scale.ttft, max_seconds=30, stream=True)
    g = await _load(gw.url + "/v1/chat/completions", OPENAI_SHORT, concurrency=1, requests=scale.ttft,
                    max_seconds=30, stream=True, headers=AUTH)  # fmt: skip
    d_ttft, g_ttft = d.pct(0.5, d.first_token) * 1000, g.pct(0.5, g.first_token) * 1000
    added = g_ttft - d_ttft
    rows.append(("OpenAI stream, c=1, p50 time to first token", f"direct {d_ttft:.3f} ms",
                 f"gateway {g_ttft:.3f} ms (+{added:.3f} ms)",
                 _verdict(added <= 1.0, "added <= 1 ms", f"{added - 1.0:.3f} ms")))  # fmt: skip

    # 3. Non-streamed chat, c=32: throughput on the one core, and the CPU per request against bench.run's settings.
    d = await _load(direct + "/api/chat", CHAT, concurrency=32, requests=scale.c32, max_seconds=scale.c32_seconds)
    g, cpu_ms = await _c32(gw, scale)
    t, tuned_ms = await _c32(tuned, scale)
    rows.append(("non-streamed chat, c=32, throughput", f"direct {d.rps:,.0f} req/s",
                 f"gateway {g.rps:,.0f} req/s ({g.errors} errors; tuned {t.rps:,.0f})",
                 _verdict(g.rps >= 3000, ">= 3,000 req/s", f"{3000 - g.rps:,.0f} req/s")))  # fmt: skip
    rows.append(("non-streamed chat, c=32, gateway CPU/request", f"tuned settings {tuned_ms:.3f} ms",
                 f"defaults {cpu_ms:.3f} ms (x{cpu_ms / tuned_ms:.2f}; one core: {1000 / cpu_ms:,.0f} req/s)",
                 _verdict(cpu_ms <= 0.33, "<= 0.33 ms", f"{cpu_ms - 0.33:.3f} ms")))  # fmt: skip

    # 4. Long streams, c=4: the gateway's CPU per chunk sent, OpenAI SSE against native NDJSON pass-through.
    per_chunk: dict[str, float] = {}
    for name, path, payload in (
        ("native", "/api/chat", {**CHAT, "options": {"num_predict": LONG_TOKENS}}),
        ("openai", "/v1/chat/completions", {**OPENAI_SHORT, "max_tokens": LONG_TOKENS}),
    ):
        before = gw.cpu()
        g = await _load(gw.url + path, payload, concurrency=4, requests=scale.streams, max_seconds=60, stream=True,
                        headers=AUTH)  # fmt: skip
        per_chunk[name] = (gw.cpu() - before) * 1e6 / max(1, g.tokens)
    openai_us = per_chunk["openai"]
    rows.append((f"OpenAI stream, {LONG_TOKENS} tokens, c=4, gateway CPU/chunk",
                 f"native pass-through {per_chunk['native']:.1f} us/line", f"{openai_us:.1f} us/chunk",
                 _verdict(openai_us <= 40, "<= 40 us", f"{openai_us - 40:.1f} us")))  # fmt: skip
    return rows


def chunk_microbench(chunks: int) -> Row:
    """The per-chunk path of an OpenAI chat stream in this process (a native NDJSON line parsed, converted and
    framed as SSE, as ``api/openai.py`` does it) against the general conversion (a dict per event, then orjson)."""
    from shared_ollama.api.http import native_chunk, sse_frames
    from shared_ollama.protocol.convert import chat_chunk_from_native
    from shared_ollama.protocol.openai_stream import ChatChunkFrames

    message = {"role": "assistant", "content": "tok "}
    line = orjson.dumps({"model": "fake", "created_at": "2026-01-01T00:00:00Z", "message": message, "done": False})

    def general(native: dict[str, object]) -> list[dict[str, object]]:
        return chat_chunk_from_native(native, request_id="r1", created=1, first=False, include_usage=False)

    def per_chunk(frame: Callable[[bytes], bytes]) -> float:
        frame(line)  # the first chunk of a stream takes the general path
        started = time.process_time()
        for _ in range(chunks):
            frame(line)
        return (time.process_time() - started) * 1e6 / chunks

    frames = ChatChunkFrames(request_id="r1", created=1, include_usage=False)
    reference = per_chunk(sse_frames(general))
    ours = per_chunk(lambda line: frames(native_chunk(line)))
    return (
        "OpenAI chunk translation, in process (micro)",
        f"dict per event + orjson {reference:.2f} us",
        f"{ours:.2f} us/chunk",
        _verdict(ours <= 40, "<= 40 us", f"{ours - 40:.2f} us"),
    )


def _print(rows: list[Row]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _serve(port: int, env: dict[str, str], cores: set[int]) -> subprocess.Popen[bytes]:
    proc = _spawn(["-m", "shared_ollama.cli", "serve", "--port", str(port)], env, cores)
    wait_http_ok(f"http://127.0.0.1:{port}/api/v1/health", proc)
    return proc


def run(quick: bool = False) -> list[Row]:
    """Start the scripted engine and the two gateways, measure, print the table and return it."""
    scale = QUICK if quick else FULL
    cores, gw_cores, other = split_cores()
    print(f"machine: {_machine()}")
    print(f"cores: gateways {sorted(gw_cores)}, scripted engine + load generator {sorted(other)}")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-defaults-") as tmp:
            tenants, no_tenants = Path(tmp) / "tenants.yaml", Path(tmp) / "no-tenants.yaml"
            tenants.write_text(TENANTS_YAML)
            no_tenants.write_text("tenants: []\n")
            fport = free_port()
            engine = ["-m", "tests.support.fake_engine", "--port", str(fport), "--tokens", str(LONG_TOKENS)]
            procs.append(_spawn(engine, {}, other))
            wait_http_ok(f"http://127.0.0.1:{fport}/api/version", procs[-1])
            common = {
                "SHARED_OLLAMA_ENGINE": "external",
                "SHARED_OLLAMA_OLLAMA_URL": f"http://127.0.0.1:{fport}",
                "SHARED_OLLAMA_ENGINE_SLOTS": "64",  # the engine's parallel slots, sized to the load
            }
            defaults_env = {**common, "SHARED_OLLAMA_DATA_DIR": f"{tmp}/defaults",
                            "SHARED_OLLAMA_TENANTS_FILE": str(tenants)}  # fmt: skip
            tuned_env = {**common, **TUNED_ENV, "SHARED_OLLAMA_DATA_DIR": f"{tmp}/tuned",
                         "SHARED_OLLAMA_TENANTS_FILE": str(no_tenants)}  # fmt: skip
            gport, tport = free_port(), free_port()
            procs.append(_serve(gport, defaults_env, gw_cores))
            gw = Gateway(f"http://127.0.0.1:{gport}", psutil.Process(procs[-1].pid), AUTH)
            procs.append(_serve(tport, tuned_env, gw_cores))
            tuned = Gateway(f"http://127.0.0.1:{tport}", psutil.Process(procs[-1].pid), {})
            rows = asyncio.run(_phases(f"http://127.0.0.1:{fport}", gw, tuned, scale))
            log = Path(tmp) / "defaults" / "logs" / "api.log"
            lines = log.read_bytes().count(b"\n") if log.exists() else 0
            rss = gw.proc.memory_info().rss / 2**20
            print(f"defaults gateway: {lines:,} lines in its access log, RSS {rss:.1f} MiB")
    finally:
        for proc in reversed(procs):
            stop(proc)
        os.sched_setaffinity(0, set(cores))
    rows.append(chunk_microbench(scale.micro))
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    _print(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter phases (under a minute)")
    args = parser.parse_args()
    run(quick=args.quick)


if __name__ == "__main__":
    main()
