"""Models from files against the real engine, through the gateway, with the official ``ollama`` client: blob
uploads, a model created from an uploaded GGUF and chatted with, a LoRA adapter applied by llama.cpp (a changed
answer at temperature 0), a Modelfile naming files on the gateway's machine, deletes that free the blobs no model
uses, ``shared-ollama models prune``, and ``/api/ps`` reporting measured memory.

The gateway and its engine have a store of their own that starts empty; the GGUF is the offline SmolLM2, the
adapter a tiny random LoRA for it (tests/support/tiny_lora.py). Tests run in file order and build on each other.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest
import yaml

from shared_ollama.engine.store import ModelStore
from tests.e2e.conftest import start_gateway
from tests.support.processes import poll, stop
from tests.support.tiny_lora import write_lora

pytestmark = pytest.mark.e2e

LIMIT = 100_000_000
"""max_blob_bytes of this gateway and its engine (SmolLM2's GGUF is 98 MB)."""
KEYS = {"ops": "key-ops", "maker": "key-maker"}
QUESTION = [{"role": "user", "content": "Name three colours."}]
GREEDY = {"temperature": 0, "seed": 1, "num_predict": 24}


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


def digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory on the gateway's machine with SmolLM2's GGUF and a LoRA adapter for it."""
    source = ModelStore(model_store)
    smol = source.get("smollm2:135m")
    assert smol is not None, f"smollm2:135m is missing from {model_store}"
    work = tmp_path_factory.mktemp("model-files")
    shutil.copyfile(source.blob_path(smol.digest), work / "smollm2.gguf")
    write_lora(work / "lora.gguf", work / "smollm2.gguf")
    write_lora(work / "alien.gguf", work / "smollm2.gguf", architecture="qwen2")
    return work


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("files-store"))


@pytest.fixture(scope="module")
def gateway(
    store: ModelStore, files: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    data = tmp_path_factory.mktemp("gw-files")
    tenants = {
        "tenants": [
            {"name": "ops", "role": "admin", "keys": [KEYS["ops"]]},
            {"name": "maker", "keys": [KEYS["maker"]], "policy": {"manage_models": True}},
        ]
    }
    (data / "tenants.yaml").write_text(yaml.safe_dump(tenants))
    env = {
        "SHARED_OLLAMA_TENANTS_FILE": str(data / "tenants.yaml"),
        "SHARED_OLLAMA_MAX_BLOB_BYTES": str(LIMIT),
        "SHARED_OLLAMA_MODELFILE_DIR": str(files),
    }
    url, proc = start_gateway(store.root, data, artifacts_dir / "gateway-model-files-e2e.log", env=env)
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, headers=auth("ops"), timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def client(gateway: str) -> ollama.Client:
    return ollama.Client(host=gateway, headers=auth("ops"), timeout=300)


def _blob_files(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.blobs.iterdir()) if store.blobs.is_dir() else []


def _answer(client: ollama.Client, model: str) -> str:
    reply = client.chat(model=model, messages=QUESTION, options=GREEDY)
    assert reply.done and reply.message.content, reply
    return str(reply.message.content)


def _chunks(size: int) -> Iterator[bytes]:
    for start in range(0, size, 1 << 20):
        yield b"z" * min(1 << 20, size - start)


def _chunks_of(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while block := handle.read(1 << 16):
            yield block


def test_a_blob_is_uploaded_once_and_then_found(http: httpx.Client, store: ModelStore, files: Path) -> None:
    lora = files / "lora.gguf"
    digest = digest_of(lora)
    assert http.head(f"/api/blobs/{digest}").status_code == 404
    created = http.post(f"/api/blobs/{digest}", content=_chunks_of(lora))
    assert created.status_code == 201, created.text
    assert http.head(f"/api/blobs/{digest}").status_code == 200
    assert http.post(f"/api/blobs/{digest}", content=b"not read").status_code == 200, "already there"
    assert store.blob_path(digest).read_bytes() == lora.read_bytes(), "the engine's store holds the very bytes"


def test_other_bytes_than_the_digest_are_refused_and_nothing_is_kept(
    http: httpx.Client, store: ModelStore, files: Path
) -> None:
    before = _blob_files(store)
    wrong = "sha256:" + "0" * 64
    resp = http.post(f"/api/blobs/{wrong}", content=(files / "lora.gguf").read_bytes())
    assert (resp.status_code, resp.json()["code"]) == (400, "invalid_request")
    assert resp.json()["error"].startswith("digest mismatch, expected 'sha256:0000")
    assert http.head(f"/api/blobs/{wrong}").status_code == 404
    assert _blob_files(store) == before, "no blob and no partial file left"


def test_a_blob_over_the_size_limit_is_refused_and_nothing_is_kept(
    gateway: str, http: httpx.Client, store: ModelStore
) -> None:
    before = _blob_files(store)
    digest = "sha256:" + "1" * 64
    counted = http.post(f"/api/blobs/{digest}", content=_chunks(LIMIT + 1))  # chunked: counted as it arrives
    assert (counted.status_code, counted.json()["code"]) == (413, "request_too_large")
    port = int(gateway.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:  # declared: refused before any byte
        head = f"POST /api/blobs/{digest} HTTP/1.1\r\nHost: gateway\r\nContent-Length: {LIMIT + 1}\r\n"
        conn.sendall(f"{head}Authorization: Bearer {KEYS['ops']}\r\n\r\n".encode())
        assert conn.recv(65536).startswith(b"HTTP/1.1 413 ")
    # The engine deletes its partial file when it sees the gateway cut the upload off.
    poll(lambda: _blob_files(store) == before, "the engine's partial upload removed")


def test_a_model_from_an_uploaded_gguf_answers(client: ollama.Client, store: ModelStore, files: Path) -> None:
    digest = client.create_blob(files / "smollm2.gguf")  # the client uploads, then names the blob in files
    assert digest == digest_of(files / "smollm2.gguf")
    assert store.blob_path(digest).is_file()
    assert client.create(model="imported:smol", files={"smollm2.gguf": digest}).status == "success"
    shown = client.show("imported:smol")
    assert shown.details is not None and shown.details.family == "llama"
    assert "completion" in (shown.capabilities or [])
    assert _answer(client, "imported:smol")


def test_a_lora_adapter_changes_the_answer(client: ollama.Client, http: httpx.Client, files: Path) -> None:
    lora = client.create_blob(files / "lora.gguf")
    assert client.create(model="imported:lora", from_="imported:smol", adapters={"lora.gguf": lora}).status == "success"
    base, adapted = _answer(client, "imported:smol"), _answer(client, "imported:lora")
    assert adapted != base, f"greedy answers should differ once llama.cpp applies the adapter: {base!r}"
    alien = client.create_blob(files / "alien.gguf")
    refused = http.post(
        "/api/create", json={"model": "alien:x", "from": "imported:smol", "adapters": {"a.gguf": alien}}
    )
    assert refused.status_code == 400
    assert "adapter architecture 'qwen2' does not match the model's 'llama'" in refused.json()["error"]


def test_a_modelfile_names_files_on_the_gateways_machine(
    gateway: str, http: httpx.Client, client: ollama.Client
) -> None:
    body = {"name": "local:lora", "modelfile": "FROM ./smollm2.gguf\nADAPTER ./lora.gguf\n"}
    maker = httpx.post(f"{gateway}/api/v1/models/create", json=body, headers=auth("maker"), timeout=60)
    assert maker.status_code == 403, "reading the gateway's files is for admins"
    created = http.post("/api/v1/models/create", json=body)
    assert created.status_code == 200, created.text
    assert _answer(client, "local:lora") == _answer(client, "imported:lora"), "the same weights and adapter"
    missing = http.post("/api/v1/models/create", json={"name": "x", "modelfile": "FROM ./absent.gguf\n"})
    assert missing.status_code == 400
    assert "FROM ./absent.gguf: no such file on the gateway's machine" in missing.json()["error"]


def test_ps_reports_measured_memory(http: httpx.Client, store: ModelStore) -> None:
    loaded = {m["name"]: m for m in http.get("/api/ps").json()["models"]}
    assert {"imported:smol", "imported:lora", "local:lora"} <= set(loaded)
    smol = store.get("imported:smol")
    assert smol is not None
    for model in loaded.values():
        assert model["size_estimated"] is False, "measured at load, not estimated"
        assert model["size"] >= smol.size // 2
        assert model["size_vram"] == 0, "no GPU here"


def _prune(store: ModelStore, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHARED_OLLAMA_MODELS_DIR": str(store.root)}
    command = [sys.executable, "-m", "shared_ollama.cli", "models", "prune", *flags]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)


def test_models_prune_removes_only_blobs_no_model_uses(http: httpx.Client, store: ModelStore, files: Path) -> None:
    orphan = b"uploaded, never used by a model\n" * 100
    digest = "sha256:" + hashlib.sha256(orphan).hexdigest()
    assert http.post(f"/api/blobs/{digest}", content=orphan).status_code == 201
    alien = files / "alien.gguf"  # uploaded for a create that was refused: no model uses it either
    orphans = sorted(
        [(store.blob_path(digest).name, len(orphan)), (store.blob_path(digest_of(alien)).name, alien.stat().st_size)]
    )
    used = set(_blob_files(store)) - {name for name, _ in orphans}
    dry = _prune(store, "--dry-run")
    assert dry.stdout.splitlines() == [f"would remove\t{name}\t{size}" for name, size in orphans]
    assert store.blob_path(digest).exists()
    done = _prune(store)
    assert done.stdout.splitlines() == [f"removed\t{name}\t{size}" for name, size in orphans]
    assert set(_blob_files(store)) == used, "every blob a model uses is kept"
    assert len(used) == 2, "SmolLM2's GGUF and the adapter"
    assert http.head(f"/api/blobs/{digest}").status_code == 404


def test_deleting_models_frees_the_blobs_no_other_model_uses(
    client: ollama.Client, store: ModelStore, files: Path
) -> None:
    smol, lora = (store.blob_path(digest_of(files / name)) for name in ("smollm2.gguf", "lora.gguf"))
    client.delete("imported:lora")
    assert lora.exists(), "local:lora still applies the adapter"
    client.delete("local:lora")
    assert not lora.exists()
    assert smol.exists(), "imported:smol still uses the GGUF"
    client.delete("imported:smol")
    assert not smol.exists()
    assert _blob_files(store) == []
    assert [m.model for m in client.list().models] == []
