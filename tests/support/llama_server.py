"""llama.cpp's own OpenAI-compatible HTTP server (through xllamacpp) in a child process, as an ``openai`` host.

``python -m tests.support.llama_server STORE MODEL...`` loads each model of the model store ``STORE`` into an
``xllamacpp.Server`` with the engine's own parameters (``engine/runtime.py:llama_params``: an embedding model gets
llama.cpp's embedding mode), each serving llama.cpp's HTTP API on a loopback port of its own with the API key in
``LLAMA_SERVER_KEY``; prints ``{"model": "http://127.0.0.1:port", ...}`` as one line, then waits for SIGTERM.
``llama_server_process`` runs it and yields that mapping.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from tests.support.processes import stop

_ROOT = Path(__file__).resolve().parents[2]


def serve(store_dir: Path, api_key: str, models: list[str]) -> None:
    import xllamacpp

    from shared_ollama.engine.runtime import llama_params
    from shared_ollama.engine.store import ModelStore
    from shared_ollama.settings import Settings

    settings = Settings(_env_file=None, models_dir=store_dir, data_dir=store_dir.parent, engine_num_parallel=2)
    store = ModelStore(store_dir)
    servers = {}
    for name in models:
        entry = store.get(name)
        if entry is None:
            raise SystemExit(f"{name} is not in {store_dir}")
        params, _ = llama_params(
            entry, store.model_path(entry), settings, 512, threads=1, cache_ram_mib=64, api_key=api_key
        )
        if "embedding" in entry.capabilities:
            params.embd_normalize = 2  # what an OpenAI-compatible embedding server sends: unit vectors
        servers[name] = xllamacpp.Server(params)
    addresses = {name: str(server.listening_address).rstrip("/") for name, server in servers.items()}
    print(orjson.dumps(addresses).decode(), flush=True)
    signal.pause()


@contextmanager
def llama_server_process(store_dir: Path, models: list[str], log_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """The child serving ``models``; yields ``({model: base URL}, api key)`` once every model is loaded."""
    key = secrets.token_urlsafe(24)
    python_path = os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.llama_server", str(store_dir), *models],
            cwd=_ROOT,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": python_path, "LLAMA_SERVER_KEY": key},
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"llama.cpp's server did not start; see {log_path}")
        yield orjson.loads(line), key
    finally:
        stop(proc)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), os.environ["LLAMA_SERVER_KEY"], sys.argv[2:])
