"""Models created from uploaded files (``/api/create`` with ``files`` and ``adapters``) over a store of tiny GGUF
files: what the model is made of, and every refusal (a 400 naming the file, nothing written).

Nothing is loaded here (the engine's HTTP endpoints run in-process; the registry's unloads are recorded); the real
engine loading and applying an adapter is tests/e2e/test_model_files_e2e.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from gguf import GGUFWriter
from starlette.testclient import TestClient

from shared_ollama.engine.create_files import model_capabilities
from shared_ollama.engine.server import create_engine_app
from shared_ollama.engine.store import ModelStore
from shared_ollama.engine.tiny_vision import write_projector
from shared_ollama.settings import Settings
from tests.support.tiny_lora import write_lora
from tests.unit.test_engine_store import write_gguf

JINJA = "{% for m in messages %}{{ m.content }}{% endfor %}"


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "store")
    store.add_gguf("base:1b", write_gguf(tmp_path / "base.gguf", width=8), capabilities=["completion"])
    return store


@pytest.fixture
def blobs(store: ModelStore, tmp_path: Path) -> dict[str, str]:
    """Uploaded blobs by role: a model, a projector, a LoRA for the model, one for another architecture, a split
    GGUF's first part and a file that is not GGUF."""
    model = write_gguf(tmp_path / "model.gguf", width=8, context=512)
    split = GGUFWriter(str(tmp_path / "split.gguf"), "llama")
    split.add_uint16("split.count", 2)
    split.write_header_to_file()
    split.write_kv_data_to_file()
    split.close()
    (tmp_path / "notes.txt").write_text("not a model")
    files = {
        "model": model,
        "projector": write_projector(tmp_path / "mmproj.gguf", n_embd_text=8),
        "lora": write_lora(tmp_path / "lora.gguf", model, rank=2, weights=("output.weight",)),
        "alien": write_lora(tmp_path / "alien.gguf", model, rank=2, weights=("output.weight",), architecture="qwen2"),
        "split": tmp_path / "split.gguf",
        "text": tmp_path / "notes.txt",
    }
    base = store.get("base:1b")
    assert base is not None
    return {"base": base.digest, **{role: store.add_blob(path)[0] for role, path in files.items()}}


@pytest.fixture
def unloaded() -> list[str]:
    return []


@pytest.fixture
def client(store: ModelStore, unloaded: list[str]) -> Iterator[TestClient]:
    app = create_engine_app(Settings(_env_file=None, models_dir=store.root))

    async def unload(name: str) -> None:
        unloaded.append(name)

    app.state.engine.registry.unload = unload
    with TestClient(app) as client:
        yield client


def _create(client: TestClient, **body: Any) -> Any:
    return client.post("/api/create", json={"model": "imported:test", **body})


def test_a_model_from_its_gguf_blob(client: TestClient, store: ModelStore, blobs: dict[str, str]) -> None:
    resp = _create(client, files={"model.gguf": blobs["model"]}, system="Be brief.", parameters={"temperature": 0})
    assert resp.status_code == 200, resp.text
    lines = [orjson.loads(line) for line in resp.text.splitlines()]
    assert lines == [
        {"status": "parsing GGUF"},
        {"status": f"using existing layer {blobs['model']}"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    entry = store.get("imported:test")
    assert entry is not None
    assert (entry.digest, entry.projector, entry.adapters, entry.parent) == (blobs["model"], None, [], None)
    assert (entry.capabilities, entry.context_length, entry.chat_template) == (["completion"], 512, "{{ messages }}")
    assert (entry.system, entry.parameters) == ("Be brief.", {"temperature": 0.0})
    assert entry.size == store.blob_path(blobs["model"]).stat().st_size


def test_a_projector_among_the_files_gives_vision(client: TestClient, store: ModelStore, blobs: dict[str, str]) -> None:
    files = {"model.gguf": blobs["model"], "mmproj.gguf": blobs["projector"]}
    assert _create(client, files=files, stream=False).json() == {"status": "success"}
    entry = store.get("imported:test")
    assert entry is not None
    assert (entry.digest, entry.projector) == (blobs["model"], blobs["projector"])
    sizes = [store.blob_path(blobs[k]).stat().st_size for k in ("model", "projector")]
    assert entry.size == sum(sizes)
    assert "vision" in client.post("/api/show", json={"model": "imported:test"}).json()["capabilities"]


def test_adapters_among_the_files_or_beside_them(client: TestClient, store: ModelStore, blobs: dict[str, str]) -> None:
    assert _create(client, files={"m.gguf": blobs["model"], "l.gguf": blobs["lora"]}).status_code == 200
    entry = store.get("imported:test")
    assert entry is not None and entry.adapters == [blobs["lora"]]
    resp = _create(client, model="other:test", files={"m.gguf": blobs["model"]}, adapters={"l.gguf": blobs["lora"]})
    assert resp.status_code == 200
    other = store.get("other:test")
    assert other is not None and other.adapters == [blobs["lora"]]
    assert other.size == sum(store.blob_path(blobs[k]).stat().st_size for k in ("model", "lora"))


def test_an_adapter_on_a_model_from_the_store(client: TestClient, store: ModelStore, blobs: dict[str, str]) -> None:
    body = {"from": "base:1b", "adapters": {"lora.gguf": blobs["lora"]}, "template": JINJA, "stream": False}
    assert _create(client, **body).json() == {"status": "success"}
    base, entry = store.get("base:1b"), store.get("imported:test")
    assert base is not None and entry is not None
    assert (entry.digest, entry.adapters, entry.parent, entry.template) == (
        base.digest,
        [blobs["lora"]],
        "base:1b",
        JINJA,
    )
    assert base.adapters == [], "the base model is left as it was"
    assert entry.size == base.size + store.blob_path(blobs["lora"]).stat().st_size
    again = _create(client, model="twice:test", **{**body, "from": "imported:test"})
    assert again.status_code == 200
    twice = store.get("twice:test")
    assert twice is not None and (twice.adapters, twice.size) == ([blobs["lora"]], entry.size), "not applied twice"


def test_replacing_a_model_drops_its_unused_adapter_and_unloads_it(
    client: TestClient, store: ModelStore, blobs: dict[str, str], unloaded: list[str]
) -> None:
    _create(client, **{"from": "base:1b", "adapters": {"l.gguf": blobs["lora"]}})
    assert store.blob_path(blobs["lora"]).exists()
    assert _create(client, **{"from": "base:1b"}).status_code == 200
    assert unloaded == ["imported:test"]
    assert not store.blob_path(blobs["lora"]).exists(), "no manifest uses the adapter any more"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"files": {"m.gguf": "sha256:" + "1" * 64}}, "'files' 'm.gguf': blob sha256:1111"),
        ({"files": {"m.gguf": "sha256:12"}}, "invalid digest"),
        ({"files": {"../m.gguf": "model"}}, "must be relative"),
        ({"files": {"notes.txt": "text"}}, "not a GGUF file"),
        ({"files": {"a.gguf": "model", "b.gguf": "base"}}, "exactly one model GGUF (found: a.gguf, b.gguf)"),
        ({"files": {"mmproj.gguf": "projector"}}, "exactly one model GGUF (found: none)"),
        ({"files": {"m.gguf": "split"}}, "a split GGUF (2 parts)"),
        ({"files": {"m.gguf": "model"}, "adapters": {"l.gguf": "alien"}}, "architecture 'qwen2' does not match"),
        ({"files": {"m.gguf": "model"}, "adapters": {"l.gguf": "model"}}, "a model GGUF, not a LoRA adapter"),
        ({"from": "base:1b", "files": {"m.gguf": "model"}}, "either 'from'"),
        ({"from": "base:1b", "files": {"p.gguf": "projector"}}, "either 'from'"),
        ({"files": {}}, "'from' or 'files' is required"),
        ({"from": "missing:1b", "adapters": {"l.gguf": "lora"}}, "model 'missing:1b' not found"),
        ({"files": {"m.gguf": "model"}, "quantize": "q4_K_M"}, "quantizing needs a real Ollama"),
    ],
)
def test_refusals_name_the_file_and_write_nothing(
    client: TestClient, store: ModelStore, blobs: dict[str, str], body: dict[str, Any], words: str
) -> None:
    def named(files: Any) -> Any:
        return {k: blobs.get(v, v) for k, v in files.items()} if isinstance(files, dict) else files

    body = {**body, **{k: named(body[k]) for k in ("files", "adapters") if k in body}}
    resp = _create(client, **body)
    assert resp.status_code in (400, 404), resp.text
    assert words in resp.json()["error"]
    assert store.get("imported:test") is None


def test_a_pooling_model_embeds() -> None:
    assert model_capabilities({"general.architecture": "llama"}) == ["completion"]
    assert model_capabilities({"general.architecture": "qwen3", "qwen3.pooling_type": 3}) == ["embedding"]
    assert model_capabilities({"general.architecture": "llama", "llama.pooling_type": 0}) == ["completion"]
    assert model_capabilities({"general.architecture": "bert"}) == ["embedding"]
