"""Pull throughput: the embedded engine pulling a GGUF from a loopback stand-in hub, against a plain
``huggingface_hub`` download of the same file from the same stand-in, in the same run.

    .venv/bin/python -m bench.pull
    .venv/bin/python -m bench.pull --megabytes 1024 --runs 5

A GGUF of the given size (a header and one tensor of zeros) is served as a Hugging Face repository by the tests'
stand-in hub (tests/support/model_hub.py). Each run, alternately: a plain ``hf_hub_download`` into a fresh cache
directory, in a process of its own; and the engine (a ``shared-ollama engine`` process with a store of its own)
pulling it through ``/api/pull``, timed from the request to ``success`` (the whole pull: listing, download with
hashing, verification, install) and from the layer's first progress line to its last (the transfer). The model
is deleted between runs, so every pull downloads. Printed: the median time and MB/s of each, and the ratios of
the engine's throughput to the plain download's. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from tests.support.gguf_files import filler_gguf
from tests.support.model_hub import ModelHub
from tests.support.processes import free_port, spawn, stop, wait_http_ok

REPO = "bench-org/Filler-GGUF"
FILE = "filler-Q4_K_M.gguf"


_PLAIN = """
import sys, time
from huggingface_hub import hf_hub_download
started = time.perf_counter()
hf_hub_download(sys.argv[1], sys.argv[2], endpoint=sys.argv[3], cache_dir=sys.argv[4], token=False)
print(time.perf_counter() - started)
"""


def plain_download(hub: ModelHub, cache: Path) -> float:
    """Seconds of one ``hf_hub_download`` in a process of its own (as the engine is: neither shares the
    stand-in hub's interpreter), timed inside it after its imports."""
    args = [sys.executable, "-c", _PLAIN, REPO, FILE, hub.url, str(cache)]
    done = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600)
    shutil.rmtree(cache)
    return float(done.stdout.strip().splitlines()[-1])


def engine_pull(http: httpx.Client) -> tuple[float, float]:
    """(whole pull, transfer) seconds of one pull through the engine."""
    started = time.perf_counter()
    first = last = None
    with http.stream("POST", "/api/pull", json={"model": f"hf.co/{REPO}"}) as resp:
        for raw in resp.iter_lines():
            line = orjson.loads(raw)
            if "error" in line:
                raise RuntimeError(line["error"])
            if "digest" in line:
                now = time.perf_counter()
                first = now if first is None else first
                if line.get("completed") == line["total"]:
                    last = now
    whole = time.perf_counter() - started
    assert first is not None and last is not None
    http.request("DELETE", "/api/delete", json={"model": f"hf.co/{REPO}"}).raise_for_status()
    return whole, last - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp:
        root = Path(tmp)
        gguf = filler_gguf(root / "filler.gguf", "llama", args.megabytes)
        size = gguf.stat().st_size
        hub = ModelHub()
        hub.add_repo(REPO, {FILE: gguf})
        with hub.running():
            port = free_port()
            env = {"SHARED_OLLAMA_MODELS_DIR": str(root / "store"), "SHARED_OLLAMA_HF_ENDPOINT": hub.url}
            proc = spawn(["engine", "--host", "127.0.0.1", "--port", str(port)], env=env, log_path=root / "engine.log")
            try:
                url = f"http://127.0.0.1:{port}"
                wait_http_ok(f"{url}/api/version", proc)
                plain, whole, transfer = [], [], []
                with httpx.Client(base_url=url, timeout=600) as http:
                    for run in range(args.runs):
                        plain.append(plain_download(hub, root / f"cache-{run}"))
                        pulled, moved = engine_pull(http)
                        whole.append(pulled)
                        transfer.append(moved)
            finally:
                stop(proc)
    mb = size / 1e6
    rows = (("plain hf_hub_download", plain), ("engine pull (whole)", whole), ("engine pull (transfer)", transfer))
    for label, times in rows:
        median = statistics.median(times)
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"{label:<26} median {median:7.2f} s  {mb / median:8.1f} MB/s   runs: {runs}")
    reference = statistics.median(plain)
    print(
        f"file: {mb:.0f} MB; throughput ratio engine/plain: whole pull {reference / statistics.median(whole):.2f}, "
        f"transfer {reference / statistics.median(transfer):.2f}"
    )


if __name__ == "__main__":
    main()
