"""Files on the gateway's machine named by a Modelfile: resolved as Ollama's CLI resolves them, hashed, read in
blocks; and the Modelfile create that uploads them to the engine (a recording fake engine client)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared_ollama.errors import InvalidRequest, ModelNotFound
from shared_ollama.service.models import local_files
from shared_ollama.service.models.local_files import file_blocks, fingerprint, resolve
from shared_ollama.service.models.ops import ModelOps

DATA = b"GGUF" + bytes(range(256)) * 10_000


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "m.gguf"
    path.parent.mkdir()
    path.write_bytes(DATA)
    return path


def test_paths_resolve_like_ollamas_cli(tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve("./models/m.gguf", tmp_path, instruction="FROM") == gguf
    assert resolve("models/../models/m.gguf", tmp_path, instruction="FROM") == gguf
    assert resolve(str(gguf), Path("/elsewhere"), instruction="FROM") == gguf
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve("~/models/m.gguf", Path("/elsewhere"), instruction="ADAPTER") == gguf


def test_missing_files_and_directories_are_refused_by_instruction(tmp_path: Path, gguf: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"ADAPTER ./lora.gguf: no such file .*resolved to .*lora.gguf"):
        resolve("./lora.gguf", tmp_path, instruction="ADAPTER")
    with pytest.raises(InvalidRequest, match=r"FROM ./models: a directory; only a GGUF file"):
        resolve("./models", tmp_path, instruction="FROM")


async def test_digest_and_blocks(gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await fingerprint(gguf) == ("sha256:" + hashlib.sha256(DATA).hexdigest(), len(DATA))
    monkeypatch.setattr(local_files, "BLOCK", 1000)
    blocks = [block async for block in file_blocks(gguf)]
    assert b"".join(blocks) == DATA
    assert len(blocks) == -(-len(DATA) // 1000), "read a block at a time, never whole"


class FakeClient:
    """Records what ModelOps asks of the engine; it has the blobs in ``present``."""

    def __init__(self, present: set[str]) -> None:
        self.present = present
        self.uploaded: dict[str, int] = {}
        self.created: list[dict[str, Any]] = []

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        assert (method, path.startswith("/api/blobs/")) == ("HEAD", True)
        if path.removeprefix("/api/blobs/") not in self.present:
            raise ModelNotFound("engine answered HTTP 404")
        return b""

    async def upload(self, path: str, chunks: AsyncIterator[bytes], length: int | None = None) -> int:
        size = sum([len(c) async for c in chunks])
        assert length == size, "the engine is told the size up front"
        self.uploaded[path.removeprefix("/api/blobs/")] = size
        return 201

    async def request_json(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert (method, path) == ("POST", "/api/create")
        self.created.append(body)
        return {"status": "success"}


async def test_a_modelfile_with_files_uploads_what_the_engine_lacks_then_creates(tmp_path: Path, gguf: Path) -> None:
    lora = tmp_path / "lora.gguf"
    lora.write_bytes(b"GGUF adapter")
    (model_digest, _), (lora_digest, _) = await fingerprint(gguf), await fingerprint(lora)
    client = FakeClient(present={lora_digest})
    changed: list[str] = []
    ops = ModelOps(client, "5m", changed.append)  # type: ignore[arg-type]
    text = "FROM ./models/m.gguf\nADAPTER ./lora.gguf\nPARAMETER temperature 0\n"
    assert await ops.create_from_modelfile("mine", text, tmp_path) == {"status": "success"}
    assert client.uploaded == {model_digest: len(DATA)}, "the adapter the engine had is not sent again"
    assert client.created == [
        {
            "model": "mine",
            "files": {"m.gguf": model_digest},
            "adapters": {"lora.gguf": lora_digest},
            "parameters": {"temperature": 0.0},
            "stream": False,
        }
    ]
    assert changed == ["mine"]


async def test_without_a_files_directory_a_modelfile_names_models_only(tmp_path: Path) -> None:
    client = FakeClient(present=set())
    ops = ModelOps(client, "5m", lambda name: None)  # type: ignore[arg-type]
    await ops.create_from_modelfile("mine", "FROM base:1b\nSYSTEM Hi.\n")
    assert client.created == [{"model": "mine", "from": "base:1b", "system": "Hi.", "stream": False}]
    with pytest.raises(InvalidRequest, match="ADAPTER needs its file uploaded"):
        await ops.create_from_modelfile("mine", "FROM base:1b\nADAPTER ./lora.gguf\n")
    assert client.uploaded == {}
