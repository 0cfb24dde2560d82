"""Parity guard (issue 17, target 1): the embedded engine against llama.cpp's own server, and the gateway against
the engine, on smollm2:135m, in one run.

    .venv/bin/python -m bench.parity           # about 2.5 minutes
    .venv/bin/python -m bench.parity --quick   # under a minute

Three targets, each warmed up, then measured one after the other (never two at once):

(a) llama.cpp's own HTTP server: ``xllamacpp.Server`` in a child process, built by the engine's own
    ``llama_params`` (same model file, slots, context per slot, threads and prompt-cache bound), sent the request
    the engine itself would send it (``engine/translate.chat_request``) on streamed ``/v1/chat/completions``;
(b) the embedded engine's Ollama API, streamed ``/api/chat``;
(c) the gateway in front of (b): auth off, ``X-Shared-Ollama-Cache: off``.

8 slots everywhere, so concurrency 8 is queued nowhere. Greedy 128-token generations (``eval_count`` is checked:
a generation that stops early is counted and printed) at concurrency 1, 4 and 8: tokens/s (generated tokens over
the wall time) and time to first token p50/p95. The targets run in short rounds on prompts of the same shape, a
different target first each round, so drift on a shared machine hits all alike. Ratios: engine/llama.cpp and
gateway/engine for tokens/s, the inverse for times (so ``>= 0.97`` reads the same on every line). Nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from tests.support.processes import free_port, spawn, stop, wait_http_ok

from shared_ollama.engine.defaults import install_defaults
from shared_ollama.engine.machine import physical_cores, prompt_cache_mib, thread_share, total_ram
from shared_ollama.engine.runtime import llama_params
from shared_ollama.engine.store import ModelEntry, ModelStore
from shared_ollama.engine.translate import chat_request
from shared_ollama.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2:135m"
SLOTS = 8
LEVELS = (1, 4, 8)
NUM_PREDICT = 128
TARGET = 0.97
ROUNDS = {1: 6, 4: 4, 8: 4}
"""Rounds per concurrency level (each sends ``level`` requests to each target)."""
QUICK_ROUNDS = {1: 2, 4: 1, 8: 1}
OFFSET = 10_000
"""Request numbers of the second and third target are shifted by this (a multiple of 8 topics: the same asks)."""
TOPICS = (
    "a lighthouse keeper and the winter storm",
    "a clockmaker who builds a clock that runs backwards",
    "two sailors lost in the fog near a rocky island",
    "a baker who opens a shop on the moon",
    "a young fox learning to hunt in a snowy forest",
    "an old librarian who finds a map inside a book",
    "a robot gardener in an abandoned city",
    "a girl who trains a dragon to carry the mail",
)
Row = tuple[str, str, str, str]
Request = Callable[[aiohttp.ClientSession, int, int], Awaitable["Sample"]]


def ollama_body(index: int, predict: int) -> dict[str, Any]:
    """The chat every target is asked for request ``index`` (a unique first line, then the same kind of ask)."""
    ask = f"Story {index:06d}. Write a long story about {TOPICS[index % len(TOPICS)]}."
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": ask}],
        "stream": True,
        "options": {"num_predict": predict, "temperature": 0, "seed": 1},
    }


def engine_settings() -> Settings:
    """The settings the engine process reads from the environment this bench gives it."""
    return Settings()


def llama_server_params(settings: Settings, entry: ModelEntry, gguf: Path, api_key: str) -> Any:
    """llama.cpp's parameters exactly as the engine loads ``entry`` alone (registry ``_num_ctx`` and ``_load``)."""
    num_ctx = int(entry.parameters.get("num_ctx") or settings.engine_num_ctx)
    if entry.context_length:
        num_ctx = min(num_ctx, entry.context_length)
    params, _ = llama_params(
        entry,
        gguf,
        settings,
        num_ctx,
        threads=thread_share(settings.engine_threads, physical_cores(), 1),
        cache_ram_mib=prompt_cache_mib(settings.engine_cache_ram_mib, total_ram()),
        api_key=api_key,
    )
    return params


def serve_llama() -> None:
    """Child process: llama.cpp's own server for MODEL; prints its address and key, then waits for SIGTERM."""
    import xllamacpp

    settings = engine_settings()
    store = ModelStore(settings.store_dir)
    entry = store.get(MODEL)
    if entry is None:
        raise SystemExit(f"{MODEL} is not in {settings.store_dir}")
    key = secrets.token_urlsafe(24)
    server = xllamacpp.Server(llama_server_params(settings, entry, store.model_path(entry), key))
    print(orjson.dumps({"address": str(server.listening_address), "key": key}).decode(), flush=True)
    signal.pause()


@dataclass
class Sample:
    ttft: float
    tokens: int


@dataclass
class Measured:
    ttfts: list[float] = field(default_factory=list)
    tokens: int = 0
    wall: float = 0.0
    short: int = 0
    errors: int = 0

    def add(self, other: Measured) -> None:
        self.ttfts += other.ttfts
        self.tokens += other.tokens
        self.wall += other.wall
        self.short += other.short
        self.errors += other.errors

    @property
    def tps(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0

    def ttft_ms(self, q: float) -> float:
        data = sorted(self.ttfts)
        return data[min(len(data) - 1, int(q * len(data)))] * 1000 if data else float("nan")


def _ollama_request(url: str, headers: dict[str, str]) -> Request:
    """Streamed ``/api/chat``: time to the first line with text, and the final line's ``eval_count``."""

    async def one(session: aiohttp.ClientSession, index: int, predict: int) -> Sample:
        started = time.perf_counter()
        ttft = 0.0
        body = orjson.dumps(ollama_body(index, predict))
        async with session.post(url + "/api/chat", data=body, headers=headers) as r:
            if r.status != 200:
                raise RuntimeError(f"{url} answered {r.status}: {(await r.read())[:200]!r}")
            async for line in r.content:
                if not line.strip():
                    continue
                chunk = orjson.loads(line)
                if chunk.get("error"):
                    raise RuntimeError(str(chunk["error"]))
                if not ttft and chunk.get("message", {}).get("content"):
                    ttft = time.perf_counter() - started
                if chunk.get("done"):
                    return Sample(ttft, int(chunk.get("eval_count") or 0))
        raise RuntimeError("stream ended without its final line")

    return one


def _llama_request(address: str, key: str, entry: ModelEntry) -> Request:
    """Streamed ``/v1/chat/completions`` of llama.cpp's server, with the body the engine would send it."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}

    async def one(session: aiohttp.ClientSession, index: int, predict: int) -> Sample:
        body = chat_request(ollama_body(index, predict), entry)
        body.update(stream=True, stream_options={"include_usage": True})  # as engine/handlers.py and runtime.py do
        started = time.perf_counter()
        ttft = 0.0
        tokens = 0
        async with session.post(address + "/v1/chat/completions", data=orjson.dumps(body), headers=headers) as r:
            if r.status != 200:
                raise RuntimeError(f"llama.cpp answered {r.status}: {(await r.read())[:200]!r}")
            async for line in r.content:
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                chunk = orjson.loads(line[6:])
                choices = chunk.get("choices") or [{}]
                if not ttft and (choices[0].get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - started
                if chunk.get("usage"):
                    tokens = int(chunk["usage"].get("completion_tokens") or 0)
        return Sample(ttft, tokens)

    return one


async def measure(
    one: Request, concurrency: int, indices: list[int], predict: int, max_seconds: float, fresh: bool = False
) -> Measured:
    """``indices`` requests by ``concurrency`` workers, stopping early after ``max_seconds``. ``fresh``: a connection
    per request (llama.cpp's server may close a connection after a stream; a reused one then fails to write)."""
    out = Measured()
    queue = list(reversed(indices))
    deadline = time.perf_counter() + max_seconds
    timeout = aiohttp.ClientTimeout(total=max_seconds + 60)
    connector = aiohttp.TCPConnector(limit=concurrency * 2, force_close=fresh)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def worker() -> None:
            while queue and time.perf_counter() < deadline:
                index = queue.pop()
                try:
                    sample = await one(session, index, predict)
                except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                    out.errors += 1
                    print(f"  request {index} failed: {exc!r}", file=sys.stderr)
                    continue
                out.ttfts.append(sample.ttft)
                out.tokens += sample.tokens
                out.short += sample.tokens < predict

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        out.wall = time.perf_counter() - started
    return out


def _verdict(ratio: float) -> str:
    return f"ratio {ratio:.3f} (>= {TARGET}) {'met' if ratio >= TARGET else 'missed'}"


def rows_for(level: int, llama: Measured, engine: Measured, gateway: Measured) -> list[Row]:
    rows: list[Row] = []
    pairs = (("engine vs llama.cpp", llama, engine), ("gateway vs engine", engine, gateway))
    for what, ref, ours in pairs:
        ratio = ours.tps / ref.tps if ref.tps else float("nan")
        rows.append((f"c={level} tokens/s, {what}", f"{ref.tps:.1f}", f"{ours.tps:.1f}", _verdict(ratio)))
    for q, name in ((0.5, "p50"), (0.95, "p95")):
        for what, ref, ours in pairs:
            ratio = ref.ttft_ms(q) / ours.ttft_ms(q) if ours.ttfts else float("nan")
            figures = f"{ref.ttft_ms(q):.1f} ms", f"{ours.ttft_ms(q):.1f} ms"
            rows.append((f"c={level} TTFT {name}, {what}", *figures, _verdict(ratio)))
    return rows


def print_rows(title: str, rows: list[Row]) -> None:
    print(title)
    print(f"{'measure':<44} {'reference':>12} {'ours':>12}  target")
    for measure_name, ref, ours, target in rows:
        print(f"{measure_name:<44} {ref:>12} {ours:>12}  {target}")


async def compare(targets: dict[str, Request], quick: bool) -> list[Row]:
    rounds = QUICK_ROUNDS if quick else ROUNDS
    for name, one in targets.items():  # warm-up: the model loaded, every slot used once, connections open
        warm = await measure(one, SLOTS, list(range(90_000, 90_000 + SLOTS)), 16, 120, fresh=name == "llama.cpp")
        print(f"warm-up {name}: {len(warm.ttfts)} answered, {warm.errors} errors")
    rows: list[Row] = []
    totals: dict[str, Measured] = {name: Measured() for name in targets}
    order = list(enumerate(targets.items()))
    for level in LEVELS:
        got = {name: Measured() for name in targets}
        for run in range(rounds[level]):
            # Short rounds of `level` requests per target, the targets in turn and a different one first each round:
            # the load of a shared machine drifts, and each target gets its share of every period.
            indices = [level * 1000 + run * 10 + i for i in range(level)]
            for offset, (name, one) in order[run % len(order) :] + order[: run % len(order)]:
                # Prompts of the same shape, but never one another target has just put in the engine's slots.
                ours = [index + offset * OFFSET for index in indices]
                got[name].add(await measure(one, level, ours, NUM_PREDICT, 90, fresh=name == "llama.cpp"))
        rows += rows_for(level, got["llama.cpp"], got["engine"], got["gateway"])
        for name in targets:
            totals[name].add(got[name])
    short = ", ".join(f"{name} {m.short}" for name, m in totals.items())
    errors = ", ".join(f"{name} {m.errors}" for name, m in totals.items())
    rows.append((f"generations shorter than {NUM_PREDICT} tokens", "", short, "0 expected"))
    rows.append(("failed requests", "", errors, "0 expected"))
    return rows


def _start_llama(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """The child running llama.cpp's server; its address and key from its first line (bounded wait)."""
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.parity", "--serve-llama"],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else b""
    if not line:
        stop(proc)
        raise RuntimeError(f"llama.cpp's server did not start; see {log}")
    info = orjson.loads(line)
    return proc, str(info["address"]).rstrip("/"), str(info["key"])


def run(quick: bool = False) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        data = Path(tmp)
        install_defaults(Settings(data_dir=data, models_dir=data / "models"))
        env = {
            "SHARED_OLLAMA_DATA_DIR": str(data),
            "SHARED_OLLAMA_MODELS_DIR": str(data / "models"),
            "SHARED_OLLAMA_ENGINE_NUM_PARALLEL": str(SLOTS),
            "SHARED_OLLAMA_LOG_LEVEL": "warning",
        }
        entry = ModelStore(data / "models").get(MODEL)
        assert entry is not None
        procs: list[subprocess.Popen[bytes]] = []
        try:
            llama, address, key = _start_llama(env, data / "llama.log")
            procs.append(llama)
            eport, gport = free_port(), free_port()
            procs.append(spawn(["engine", "--host", "127.0.0.1", "--port", str(eport)], env, data / "engine.log"))
            engine = f"http://127.0.0.1:{eport}"
            wait_http_ok(engine + "/api/version", procs[-1])
            gateway_env = {
                **env,
                "SHARED_OLLAMA_ENGINE": "external",
                "SHARED_OLLAMA_OLLAMA_URL": engine,
                "SHARED_OLLAMA_MAX_INFLIGHT_TEXT": str(SLOTS * 2),  # one tenant may fill every slot
            }
            args = ["serve", "--host", "127.0.0.1", "--port", str(gport)]
            procs.append(spawn(args, gateway_env, data / "gateway.log"))
            gateway = f"http://127.0.0.1:{gport}"
            wait_http_ok(gateway + "/api/v1/health", procs[-1])
            plain = {"Content-Type": "application/json"}
            targets = {
                "llama.cpp": _llama_request(address, key, entry),
                "engine": _ollama_request(engine, plain),
                "gateway": _ollama_request(gateway, {**plain, "X-Shared-Ollama-Cache": "off"}),
            }
            rows = asyncio.run(compare(targets, quick))
        finally:
            for proc in reversed(procs):
                stop(proc)
    print_rows(f"parity: {MODEL}, {SLOTS} slots, {NUM_PREDICT}-token greedy generations", rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one pass, fewer requests (under a minute)")
    parser.add_argument("--serve-llama", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_llama:
        serve_llama()
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout's SIGTERM still stops the children
    run(args.quick)


if __name__ == "__main__":
    main()
