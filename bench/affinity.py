"""Affinity: two models on an engine that holds one at a time, mixed traffic from four tenants, in one run.

    .venv/bin/python -m bench.affinity              # about 3 minutes
    .venv/bin/python -m bench.affinity --quick      # under a minute
    .venv/bin/python -m bench.affinity --aging-zero # also a third run with SHARED_OLLAMA_MODEL_AGING_SECONDS=0

The models: ``smollm2:135m`` and a model derived from it with ``/api/create`` (another system prompt). The embedded
engine keys loaded models by name, so the derived model is a load of its own: with
``SHARED_OLLAMA_ENGINE_MAX_LOADED_MODELS=1`` every switch between the two evicts one and loads the other (the
engine's ``/api/ps`` counts the loads).

The same traffic (same seeds) goes through two gateways, each with an embedded engine of its own, started
together and measured in turns (a, b, a, b: a change in the machine's load hits both alike):

(a) model-aware: the gateway's defaults; the scheduler prefers requests for the model it started last while a
    request for the other one has waited less than ``model_aging_seconds`` (15 s);
(b) FIFO: ``SHARED_OLLAMA_WARM_MODELS=2`` -- the scheduler believes both models fit, so it never looks at models
    and starts requests round-robin across tenants, each tenant's in arrival order. (``MODEL_AGING_SECONDS=0``
    is not FIFO: every request for the model not started last counts as aged, so it prefers the *other* model
    each time; ``--aging-zero`` measures that too.)

Each of the four tenants keeps a few requests in flight (closed loop), each for a random one of the two models
with num_predict 8-16; sending stops after a bounded time, then the requests in flight finish. Printed per run:
completed requests/s, model loads, where a request's time goes, and per tenant p95 queue wait (the gateway's
``X-Shared-Ollama-Queue-Wait-Ms``) against its share. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import aiohttp
import orjson
import psutil
from tests.support.processes import free_port, spawn, stop, wait_http_ok

from bench.loadgen import Result
from shared_ollama.engine.defaults import install_defaults
from shared_ollama.settings import Settings

BASE = "smollm2:135m"
DERIVED = "smollm2-affinity:135m"
MODELS = (BASE, DERIVED)
TENANTS = ("web", "batch", "agent", "notebook")
IN_FLIGHT = 3
"""Requests each tenant keeps in flight (below the default per-tenant cap, max_inflight_text=6)."""
ASKS = ("Capital of France?", "Name a colour.", "Count to five.", "Say hello.", "What is two plus two?")
MODEL_AWARE = "model-aware (defaults)"
FIFO = "FIFO (WARM_MODELS=2)"
AGING_ZERO = "MODEL_AGING_SECONDS=0"
Row = tuple[str, str, str, str]


@dataclass
class Run:
    """What one run measured."""

    label: str
    slots: int = 0
    wall: float = 0.0
    loads: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    """Failed requests by status and error code."""
    tenants: dict[str, Result] = field(default_factory=lambda: {t: Result() for t in TENANTS})
    by_model: Counter[str] = field(default_factory=Counter)
    load_s: list[float] = field(default_factory=list)
    """Load time paid by the requests that triggered a load (the engine's load_duration)."""
    starts: list[tuple[float, str]] = field(default_factory=list)
    """(when the gateway let the request through to the engine, its model): sent + its queue wait."""
    switches: int = 0
    """How often the gateway's start order changed model (``_switches``, summed over the windows)."""
    engine_cpu_s: float = 0.0
    """CPU seconds the engine process used during the windows (less moved by the machine's other load than wall
    time; llama.cpp's threads also spin while they wait, so it is not pure work)."""
    generate_s: list[float] = field(default_factory=list)
    """Prompt evaluation + generation time per request (the engine's prompt_eval_duration + eval_duration)."""

    @property
    def completed(self) -> int:
        return sum(r.count for r in self.tenants.values())

    @property
    def rps(self) -> float:
        return self.completed / self.wall if self.wall else 0.0

    @property
    def cpu_per_request(self) -> float:
        return self.engine_cpu_s / self.completed if self.completed else float("nan")

    @property
    def service_s(self) -> list[float]:
        """Per request: the time after the gateway's queue (latency minus queue wait), switch waits included."""
        return [lat - wait for r in self.tenants.values() for lat, wait in zip(r.latencies, r.queue_waits, strict=True)]

    def share(self) -> float:
        """The queue wait a tenant sees when the engine's slots are split evenly between the tenants: it holds
        ``slots / tenants`` of them and keeps IN_FLIGHT requests waiting or running, so by Little's law each
        request waits ``(IN_FLIGHT * tenants / slots - 1)`` mean service times."""
        service = _mean(self.service_s)
        return max(0.0, IN_FLIGHT * len(TENANTS) / max(1, self.slots) - 1) * service


def _engine_cpu(gateway_pid: int) -> float:
    """CPU seconds used so far by the gateway's child processes (its embedded engine)."""
    total = 0.0
    for child in psutil.Process(gateway_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def _switches(starts: list[tuple[float, str]]) -> int:
    """How often the gateway started a request for another model than the request it started before."""
    models = [model for _, model in sorted(starts)]
    return sum(a != b for a, b in pairwise(models))


def _code(raw: bytes) -> str:
    """The error code of a structured error body (empty when there is none)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else body.get("code") if isinstance(body, dict) else None
    return str(code or "")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


async def _loads(session: aiohttp.ClientSession, url: str) -> int:
    """Model loads since the engine started, as the engine's ``/api/ps`` counts them (through the gateway)."""
    async with session.get(url + "/api/ps") as resp:
        body = orjson.loads(await resp.read())
    return sum(int(n) for n in (body.get("loads") or {}).values())


async def _chat(
    session: aiohttp.ClientSession, url: str, tenant: str, model: str, rng: random.Random, run: Run | None
) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": rng.choice(ASKS)}],
        "stream": False,
        "options": {"num_predict": rng.randint(8, 16), "seed": rng.randrange(1 << 30)},
    }
    headers = {"X-Shared-Ollama-Project": tenant, "Content-Type": "application/json"}
    started = time.perf_counter()
    try:
        async with session.post(url + "/api/chat", data=orjson.dumps(body), headers=headers) as resp:
            raw = await resp.read()
            wait_ms = resp.headers.get("X-Shared-Ollama-Queue-Wait-Ms")
            ok = resp.status == 200
            status = str(resp.status)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        ok, raw, wait_ms, status = False, b"", None, type(exc).__name__
    if run is None:
        return
    if not ok:
        run.errors[f"{status} {_code(raw)}".strip()] += 1
        return
    answer = orjson.loads(raw)
    result = run.tenants[tenant]
    result.latencies.append(time.perf_counter() - started)
    result.queue_waits.append(int(wait_ms or 0) / 1000)
    run.starts.append((started + result.queue_waits[-1], model))
    run.by_model[model] += 1
    if answer.get("load_duration"):
        run.load_s.append(answer["load_duration"] / 1e9)
    run.generate_s.append((answer.get("prompt_eval_duration", 0) + answer.get("eval_duration", 0)) / 1e9)


async def _prepare(session: aiohttp.ClientSession, url: str, run: Run) -> None:
    """The derived model created through the gateway, both models loaded once (outside the measured windows)."""
    body = {"model": DERIVED, "from": BASE, "system": "You answer in one short sentence.", "stream": False}
    async with session.post(url + "/api/create", data=orjson.dumps(body)) as resp:
        if resp.status != 200:
            raise RuntimeError(f"creating {DERIVED} failed: {resp.status} {(await resp.read())[:200]!r}")
    async with session.get(url + "/api/v1/system/model-profile") as resp:
        run.slots = int(orjson.loads(await resp.read())["limits_in_force"]["engine_slots"])
    for model in MODELS:
        await _chat(session, url, "warmup", model, random.Random(0), None)


async def _window(
    session: aiohttp.ClientSession, url: str, pid: int, run: Run, seconds: float, max_requests: int, round_: int
) -> None:
    """One measured window: every tenant's closed loop until ``seconds`` pass (or ``max_requests`` are sent), then
    the requests in flight finish; the same seeds for every run in a round."""
    before = await _loads(session, url)
    cpu_before = _engine_cpu(pid)
    remaining = [max_requests]
    deadline = time.perf_counter() + seconds
    starts = len(run.starts)

    async def worker(tenant: str, rng: random.Random) -> None:
        while remaining[0] > 0 and time.perf_counter() < deadline:
            remaining[0] -= 1
            await _chat(session, url, tenant, rng.choice(MODELS), rng, run)

    started = time.perf_counter()
    await asyncio.gather(*(worker(t, random.Random(f"{t}-{i}-{round_}")) for t in TENANTS for i in range(IN_FLIGHT)))
    run.wall += time.perf_counter() - started
    run.engine_cpu_s += _engine_cpu(pid) - cpu_before
    run.loads += await _loads(session, url) - before
    run.switches += _switches(run.starts[starts:])


async def _traffic(
    urls: list[str], pids: list[int], runs: list[Run], rounds: int, seconds: float, max_requests: int
) -> None:
    """The runs take turns (a, b, a, b, ...): a drift in the machine's load hits every run alike."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for url, run in zip(urls, runs, strict=True):
            await _prepare(session, url, run)
        for round_ in range(rounds):
            for url, pid, run in zip(urls, pids, runs, strict=True):
                await _window(session, url, pid, run, seconds, max_requests, round_)


def _gateway(label: str, env: dict[str, str], data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A gateway managing its own embedded engine (one model at a time) on the shared model store."""
    work = data / label.split()[0].lower().replace("=", "-")
    work.mkdir()
    port = free_port()
    full_env = {
        "SHARED_OLLAMA_DATA_DIR": str(work),
        "SHARED_OLLAMA_MODELS_DIR": str(data / "models"),
        "SHARED_OLLAMA_ENGINE": "embedded",
        "SHARED_OLLAMA_ENGINE_MAX_LOADED_MODELS": "1",
        "SHARED_OLLAMA_CACHE_ENABLED": "false",  # every request reaches the engine
        "SHARED_OLLAMA_LOG_LEVEL": "warning",
        **env,
    }
    proc = spawn(["serve", "--host", "127.0.0.1", "--port", str(port)], env=full_env, log_path=work / "gateway.log")
    return proc, f"http://127.0.0.1:{port}"


def _report(run: Run) -> None:
    print(
        f"\n{run.label}: {run.completed} completed in {run.wall:.1f} s = {run.rps:.2f} req/s, "
        f"{run.loads} model loads, {run.slots} engine slots; errors {sum(run.errors.values())} {dict(run.errors)}"
    )
    print(
        "  requests per model: "
        + ", ".join(f"{m} {n}" for m, n in sorted(run.by_model.items()))
        + f"; the gateway started them in runs of one model, switching {run.switches} times (in start order)"
    )
    service = run.service_s
    print(
        f"  per request: service (after the gateway's queue) mean {_mean(service):.3f} s, of which prompt + "
        f"generation {_mean(run.generate_s):.3f} s; a load takes {_mean(run.load_s):.3f} s "
        f"({len(run.load_s)} loads reported in answers); requests per load "
        f"{run.completed / run.loads if run.loads else float('inf'):.1f}"
    )
    busy = sum(run.generate_s) / run.wall if run.wall else 0.0
    print(
        f"  engine generating {busy:.2f} requests at once on average (of {run.slots} slots); engine CPU "
        f"{run.engine_cpu_s:.1f} s = {run.cpu_per_request:.3f} s per completed request"
    )
    per_slot = f"{IN_FLIGHT} in flight x {len(TENANTS)} tenants / {run.slots} slots"
    print(f"  share = ({per_slot} - 1) x mean service = {run.share():.3f} s")
    for tenant, result in run.tenants.items():
        p95 = result.pct(0.95, result.queue_waits)
        print(
            f"  {tenant:<9} n={result.count:<5} queue wait p50 {result.pct(0.5, result.queue_waits):6.2f} s  "
            f"p95 {p95:6.2f} s = {p95 / run.share() if run.share() else float('nan'):4.2f}x share   "
            f"latency p95 {result.pct(0.95):6.2f} s"
        )


def _rows(aware: Run, fifo: Run) -> list[Row]:
    ratio = _ratio(aware.rps, fifo.rps)
    rows: list[Row] = [
        (
            "affinity: completed req/s, 2 models, 1 loaded",
            f"FIFO {fifo.rps:.2f}",
            f"model-aware {aware.rps:.2f}",
            f"{ratio:.2f}x (>= 2x) {'met' if ratio >= 2 else 'missed'}",
        ),
        ("affinity: model loads (engine /api/ps)", f"FIFO {fifo.loads}", f"model-aware {aware.loads}", "printed"),
        (
            "affinity: engine CPU s per completed request",
            f"FIFO {fifo.cpu_per_request:.3f}",
            f"model-aware {aware.cpu_per_request:.3f}",
            f"{_ratio(fifo.cpu_per_request, aware.cpu_per_request):.2f}x less (printed)",
        ),
    ]
    share = aware.share()
    for tenant, result in aware.tenants.items():
        p95 = result.pct(0.95, result.queue_waits)
        times = p95 / share if share else float("nan")
        rows.append(
            (
                f"affinity: {tenant} p95 queue wait (model-aware)",
                f"share {share:.2f} s",
                f"{p95:.2f} s",
                f"{times:.2f}x (<= 3x) {'met' if times <= 3 else 'missed'}",
            )
        )
    return rows


def run(
    quick: bool = False, seconds: float | None = None, aging_zero: bool = False, rounds: int | None = None
) -> list[Row]:
    """Both runs (and the aging-zero one if asked), their details printed, the table rows returned and printed."""
    rounds = rounds if rounds is not None else (1 if quick else 3)
    window = seconds if seconds is not None else (12.0 if quick else 20.0)
    max_requests = 400 if quick else 1000
    phases = [(MODEL_AWARE, {}), (FIFO, {"SHARED_OLLAMA_WARM_MODELS": "2"})]
    if aging_zero:
        phases.append((AGING_ZERO, {"SHARED_OLLAMA_MODEL_AGING_SECONDS": "0"}))
    print(
        f"affinity: {BASE} and {DERIVED} (derived with /api/create: another system prompt, a separate load), "
        f"engine max_loaded_models=1; {len(TENANTS)} tenants x {IN_FLIGHT} in flight, num_predict 8-16; "
        f"{rounds} round(s) of {window:.0f} s of sending per run, the runs taking turns"
    )
    runs = [Run(label) for label, _ in phases]
    with tempfile.TemporaryDirectory(prefix="affinity-") as tmp:
        data = Path(tmp)
        install_defaults(Settings(data_dir=data, models_dir=data / "models"), only=[BASE])
        procs: list[subprocess.Popen[bytes]] = []
        try:
            urls = []
            for label, env in phases:
                proc, url = _gateway(label, env, data)
                procs.append(proc)
                urls.append(url)
            for proc, url in zip(procs, urls, strict=True):
                wait_http_ok(f"{url}/api/v1/health", proc)
            asyncio.run(_traffic(urls, [p.pid for p in procs], runs, rounds, window, max_requests))
        finally:
            for proc in procs:
                stop(proc)
    for measured in runs:
        _report(measured)
    rows = _rows(runs[0], runs[1])
    print()
    for row in rows:
        print(f"{row[0]:<48} {row[1]:>18} {row[2]:>22}  {row[3]}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round of 12 s per run instead of three of 20 s")
    parser.add_argument("--seconds", type=float, help="seconds of sending per run and round")
    parser.add_argument("--rounds", type=int, help="rounds (each run once per round, in turn)")
    parser.add_argument("--aging-zero", action="store_true", help="also run with MODEL_AGING_SECONDS=0")
    args = parser.parse_args()
    run(args.quick, args.seconds, args.aging_zero, args.rounds)


if __name__ == "__main__":
    main()
