"""Cold start: ``scripts/core/start.sh`` on an installed checkout to the first answer of a chat request.

    .venv/bin/python -m bench.coldstart           # 3 cold starts and the reference (about 1 minute)
    .venv/bin/python -m bench.coldstart --quick   # 1 of each

Each start runs start.sh with a data and models directory of its own (prepared beforehand, as on an installed
checkout: ``models prepare`` then finds them in place), a free loopback port, a temporary HOME and Python's
bytecode written beforehand to a cache of the run's own (as after an install, whatever the caller's
PYTHONDONTWRITEBYTECODE); its model files are in the page cache (a first start after a reboot also reads
them from disk). When the checkout's
.venv is not installed for the current pyproject.toml (start.sh would reinstall the shared .venv), start.sh is
sourced and its ``main`` run with ``ensure_venv`` skipped: the same steps otherwise, and the output says so.

Phases, measured from outside (seconds since start.sh was started): start.sh's set-up done (it execs
``shared-ollama serve``), the gateway's port open (the app imported, the port bound), the engine process
spawned and answering ``/api/version``, ``/api/v1/health`` ok, then a streamed chat: its first token and its
end. From the service's own reports: the model's load time (``/api/ps`` ``load_duration``) and the gateway's
log (``started embedded engine``). The reference, in the same run: llama.cpp's own server (xllamacpp) started
in a bare Python process on the same model file, to its first token. Then the import times of the gateway and
the engine, and the heaviest imports (``python -X importtime``). Nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
import orjson
import psutil
from tests.support.processes import free_port, stop

from shared_ollama.engine.defaults import install_defaults
from shared_ollama.engine.store import ModelStore
from shared_ollama.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2:135m"
TARGET_S = 5.0
LIMIT_S = 120.0
"""The longest one start may take before it is given up."""
CHAT = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Why is the sky blue?"}],
    "stream": True,
    "options": {"num_predict": 16, "temperature": 0, "seed": 1},
}
Row = tuple[str, str, str, str]
_WARM = "import shared_ollama.cli, shared_ollama.app, shared_ollama.compose, shared_ollama.engine.server, uvicorn"
"""Imported once before the timed starts, to write their bytecode (an installed checkout has it)."""
_LLAMA_SERVER = """
import sys, xllamacpp
p = xllamacpp.CommonParams()
p.model.path = sys.argv[1]
p.n_parallel = int(sys.argv[2])
p.n_ctx = int(sys.argv[3]) * p.n_parallel
p.warmup = False
server = xllamacpp.Server(p)
print(server.listening_address, flush=True)
sys.stdin.read()
"""


@dataclass
class Start:
    """Seconds since the start of each phase's end (None: not seen)."""

    marks: dict[str, float] = field(default_factory=dict)
    load_s: float | None = None
    """The model's load, as the engine reports it (``/api/ps`` ``load_duration``)."""
    engine_log_s: float | None = None
    """When the gateway's log says it started the engine."""


def _installed() -> bool:
    """Whether start.sh's ``ensure_venv`` would find .venv installed for this pyproject.toml (lib.sh's stamp)."""
    files = [ROOT / "pyproject.toml", ROOT / "constraints.txt", ROOT / "clients/python/pyproject.toml"]
    stamp = hashlib.sha256(b"".join(p.read_bytes() for p in files if p.exists())).hexdigest()[:16] + "-"
    try:
        return stamp in (ROOT / ".venv/.installed").read_text().splitlines()
    except OSError:
        return False


def _start_command(port: int, installed: bool) -> list[str]:
    script = str(ROOT / "scripts/core/start.sh")
    serve = ["--host", "127.0.0.1", "--port", str(port)]
    if installed:
        return ["bash", script, *serve]
    return ["bash", "-c", f'source "{script}"; ensure_venv() {{ :; }}; main "$@"', "start.sh", *serve]


def _env(data: Path, home: Path) -> dict[str, str]:
    """start.sh's environment: none of the caller's service settings; Python's bytecode cached (as after an
    install) in a directory of the run's own, whatever the caller's PYTHONDONTWRITEBYTECODE."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARED_OLLAMA_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        HOME=str(home),
        PYTHONPYCACHEPREFIX=str(data / "pycache"),
        READY_WAIT_SECONDS=str(int(LIMIT_S)),
        SHARED_OLLAMA_DATA_DIR=str(data),
        SHARED_OLLAMA_MODELS_DIR=str(data / "models"),
        SHARED_OLLAMA_ENGINE="embedded",
    )
    return env


def _engine_port(pid: int) -> int | None:
    try:
        for child in psutil.Process(pid).children(recursive=True):
            args = child.cmdline()
            if "engine" in args and "--port" in args:
                return int(args[args.index("--port") + 1])
    except (psutil.Error, ValueError, IndexError):
        return None
    return None


async def _watch(
    proc: subprocess.Popen[bytes], port: int, t0: float, marks: dict[str, float], done: asyncio.Event
) -> None:
    """Record when start.sh execs serve, the port opens, the engine appears and answers (every 10 ms, bounded)."""
    engine_port: int | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while not done.is_set() and time.monotonic() - t0 < LIMIT_S and proc.poll() is None:
            now = time.monotonic() - t0
            if "serve" not in marks:
                try:
                    if "serve" in psutil.Process(proc.pid).cmdline():
                        marks["serve"] = now
                except psutil.Error:
                    pass
            if "port" not in marks:
                try:
                    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 0.5)
                    writer.close()
                    marks["port"] = time.monotonic() - t0
                except (OSError, TimeoutError):
                    pass
            if engine_port is None and "serve" in marks:
                engine_port = _engine_port(proc.pid)
                if engine_port is not None:
                    marks["engine_spawned"] = now
            elif engine_port is not None and "engine_ready" not in marks:
                try:
                    async with session.get(f"http://127.0.0.1:{engine_port}/api/version"):
                        marks["engine_ready"] = time.monotonic() - t0  # any answer (401: it wants its token)
                except (aiohttp.ClientError, TimeoutError):
                    pass
            await asyncio.sleep(0.01)  # the sampling period of the phases


async def _drive(proc: subprocess.Popen[bytes], port: int, t0: float) -> Start:
    start = Start()
    url = f"http://127.0.0.1:{port}"
    done = asyncio.Event()
    watcher = asyncio.create_task(_watch(proc, port, t0, start.marks, done))
    timeout = aiohttp.ClientTimeout(total=LIMIT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() - t0 < LIMIT_S and proc.poll() is None:
                try:  # waits in the port's backlog until the app has started
                    async with session.get(url + "/api/v1/health") as resp:
                        if resp.status == 200:
                            start.marks["health"] = time.monotonic() - t0
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.01)  # a refused connection: start.sh is still preparing
            if "health" not in start.marks:
                return start
            start.marks["sent"] = time.monotonic() - t0
            async with session.post(url + "/api/chat", data=orjson.dumps(CHAT)) as resp:
                async for line in resp.content:
                    if line.strip() and "first_token" not in start.marks:
                        start.marks["first_token"] = time.monotonic() - t0
                start.marks["answered"] = time.monotonic() - t0
            async with session.get(url + "/api/ps") as resp:
                models = (await resp.json()).get("models") or []
            loads = [m.get("load_duration") for m in models if m.get("name") == MODEL]
            start.load_s = loads[0] / 1e9 if loads and isinstance(loads[0], int) else None
    finally:
        done.set()
        await watcher
    return start


def _gateway_log(path: Path, wall0: float) -> float | None:
    """Seconds from the start to the gateway's own line ``started embedded engine``."""
    for raw in path.read_bytes().splitlines():
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(line, dict) and str(line.get("msg", "")).startswith("started embedded engine"):
            ts = datetime.fromisoformat(str(line["ts"]).replace("Z", "+00:00")).timestamp()
            return ts - wall0
    return None


def _one_start(data: Path, env: dict[str, str], installed: bool, n: int) -> Start:
    port = free_port()
    log_path = data / f"start-{n}.log"
    with open(log_path, "wb") as log:
        wall0, t0 = time.time(), time.monotonic()
        proc = subprocess.Popen(
            _start_command(port, installed),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            start = asyncio.run(_drive(proc, port, t0))
        finally:
            stop(proc, timeout=30)
            with contextlib.suppress(ProcessLookupError):  # start.sh's own readiness check, if still waiting
                os.killpg(proc.pid, signal.SIGTERM)
    start.engine_log_s = _gateway_log(log_path, wall0)
    return start


async def _reference_chat(address: str, t0: float) -> tuple[float, float]:
    body = {"messages": CHAT["messages"], "stream": True, "max_tokens": 16, "temperature": 0, "seed": 1}
    first = 0.0
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=LIMIT_S)) as session,
        session.post(address + "/v1/chat/completions", json=body) as resp,
    ):
        async for line in resp.content:
            if line.startswith(b"data:") and not first:
                first = time.monotonic() - t0
    return first, time.monotonic() - t0


def _reference(settings: Settings, env: dict[str, str]) -> dict[str, float]:
    """llama.cpp's own server (xllamacpp) in a bare Python process, the same model file, to its first token."""
    store = ModelStore(settings.store_dir)
    entry = store.get(MODEL)
    if entry is None:
        raise RuntimeError(f"{MODEL} is not in the store")
    gguf = store.model_path(entry)
    args = [str(gguf), str(settings.engine_num_parallel), str(settings.engine_num_ctx)]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", _LLAMA_SERVER, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        address = proc.stdout.readline().decode().strip() if proc.stdout is not None else ""
        loaded = time.monotonic() - t0
        first, answered = asyncio.run(_reference_chat(address, t0))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        stop(proc, timeout=30)
    return {"loaded": loaded, "first_token": first, "answered": answered}


def _import_seconds(module: str, runs: int, env: dict[str, str]) -> float:
    took = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, env=env, check=True, timeout=120)
        took.append(time.monotonic() - started)
    return statistics.median(took)


def _heaviest_imports(module: str, top: int, env: dict[str, str]) -> list[tuple[str, float]]:
    """The modules with the largest own import time (``-X importtime``'s self column), heaviest first."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stderr
    rows = []
    for line in out.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            rows.append((parts[2].strip(), int(parts[0]) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def _median(starts: list[Start], key: str) -> float | None:
    values = [s.marks[key] for s in starts if key in s.marks]
    return statistics.median(values) if values else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _rows(starts: list[Start], ref: dict[str, float], imports: dict[str, float], installed: bool) -> list[Row]:
    m = {k: _median(starts, k) for k in ("serve", "port", "engine_spawned", "engine_ready", "health", "sent")}
    first, answered = _median(starts, "first_token"), _median(starts, "answered")
    loads = [s.load_s for s in starts if s.load_s is not None]
    logged = [s.engine_log_s for s in starts if s.engine_log_s is not None]
    how = "start.sh" if installed else "start.sh (ensure_venv skipped: .venv not installed for this pyproject)"
    if answered is None:
        verdict = "missed: no answer"
    else:
        verdict = f"<= {TARGET_S:.0f} s: " + (
            "met" if answered <= TARGET_S else f"missed by {answered - TARGET_S:.2f} s"
        )
    since_sent = None if first is None or m["sent"] is None else first - m["sent"]
    return [
        (f"cold start: {how} to first answer", f"llama.cpp alone {_fmt(ref['answered'])}", _fmt(answered), verdict),
        ("  start.sh set-up done (execs serve)", "-", _fmt(m["serve"]), "venv check + models prepare"),
        ("  gateway port open (app imported, bound)", "-", _fmt(m["port"]), f"app import alone {_fmt(imports['app'])}"),
        (
            "  engine process spawned / answering",
            "-",
            f"{_fmt(m['engine_spawned'])} / {_fmt(m['engine_ready'])}",
            f"gateway log: {_fmt(statistics.median(logged) if logged else None)}; "
            f"engine import alone {_fmt(imports['engine'])}",
        ),
        ("  /api/v1/health ok", "-", _fmt(m["health"]), "service ready"),
        (
            "  model load (engine's /api/ps load_duration)",
            f"llama.cpp server up {_fmt(ref['loaded'])} (incl. import)",
            _fmt(statistics.median(loads) if loads else None),
            "paid by the first request",
        ),
        ("  first token after the chat was sent", f"{_fmt(ref['first_token'] - ref['loaded'])}", _fmt(since_sent), "-"),
        ("  first token since start", _fmt(ref["first_token"]), _fmt(first), "-"),
    ]


def run(quick: bool = False) -> list[Row]:
    runs = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="coldstart-") as tmp:
        data = Path(tmp)
        settings = Settings(data_dir=data, models_dir=data / "models")
        install_defaults(settings)  # an installed checkout: the offline models are in the store
        installed = _installed()
        (data / "home").mkdir()
        env = _env(data, data / "home")
        subprocess.run([sys.executable, "-c", _WARM], cwd=ROOT, env=env, check=True, timeout=300)  # the bytecode
        starts = [_one_start(data, env, installed, n) for n in range(runs)]
        ref = _reference(settings, env)
        imports = {
            "app": _import_seconds("shared_ollama.app", runs, env),
            "engine": _import_seconds("shared_ollama.engine.server", runs, env),
        }
        heaviest = _heaviest_imports("shared_ollama.app", 12, env)
    rows = _rows(starts, ref, imports, installed)
    print(f"cold start, median of {runs} start(s) (seconds since start.sh was started)")
    for row in rows:
        print(f"{row[0]:<48} {row[1]:<36} {row[2]:<20} {row[3]}")
    print("heaviest imports of the gateway (own time, one run of python -X importtime -c 'import shared_ollama.app'):")
    for name, seconds in heaviest:
        print(f"  {seconds * 1000:7.1f} ms  {name}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one start instead of three")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
