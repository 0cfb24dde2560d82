"""The tiny vision projector generator and its store entry (no llama.cpp needed)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from shared_ollama.engine.store import ModelStore
from shared_ollama.engine.tiny_vision import IMAGE_SIZE, PATCH_SIZE, install_tiny_vision, write_projector
from shared_ollama.engine.translate import chat_request
from tests.unit.test_engine_translate import USER, model


def _text_gguf(path: Path) -> Path:
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_embedding_length(48)
    writer.add_context_length(128)
    writer.add_tensor("token_embd.weight", np.zeros((4, 48), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_projector_is_deterministic_and_shaped_for_the_text_model(tmp_path: Path) -> None:
    first = write_projector(tmp_path / "a.gguf", n_embd_text=576, seed=3)
    second = write_projector(tmp_path / "b.gguf", n_embd_text=576, seed=3)
    assert first.read_bytes() == second.read_bytes()
    assert write_projector(tmp_path / "c.gguf", seed=4).read_bytes() != first.read_bytes()
    reader = gguf.GGUFReader(str(first))
    fields = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    assert fields["general.architecture"] == "clip"
    assert fields["clip.projector_type"] == "mlp"
    assert fields["clip.has_vision_encoder"] is True
    assert fields["clip.vision.image_size"] == IMAGE_SIZE
    assert fields["clip.vision.patch_size"] == PATCH_SIZE
    assert fields["clip.vision.projection_dim"] == 576
    tensors = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    assert tensors["mm.2.bias"] == (576,)
    assert tensors["v.patch_embd.weight"][:3] == (PATCH_SIZE, PATCH_SIZE, 3)  # ggml order: innermost first
    assert "v.blk.0.attn_q.weight" in tensors


def test_install_pairs_the_text_gguf_with_the_projector(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    store.add_gguf("text:1", _text_gguf(tmp_path / "text.gguf"), capabilities=["completion"], system="be brief")
    entry = install_tiny_vision(store, "text:1", "tv:test")
    text = store.get("text:1")
    assert text is not None
    assert entry.digest == text.digest  # the text model's blob is shared, not copied
    assert entry.capabilities == ["completion", "vision"]
    assert entry.system == "be brief"
    assert entry.projector and store.blob_path(entry.projector).is_file()
    fields = gguf.GGUFReader(str(store.blob_path(entry.projector))).fields
    assert fields["clip.vision.projection_dim"].contents() == 48  # the text model's width
    assert len(list(store.blobs.iterdir())) == 2
    assert install_tiny_vision(store, "text:1", "tv:test").projector == entry.projector  # idempotent
    assert store.remove("tv:test") and store.blob_path(text.digest).exists()
    assert not store.blob_path(entry.projector).exists()


def test_install_needs_the_text_model(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="not in the store"):
        install_tiny_vision(ModelStore(tmp_path), "missing:1")


def test_images_become_data_urls_of_their_type() -> None:
    vision = model(projector="sha256:11", capabilities=["completion", "vision"])
    images = ["iVBORw0KGgo=", "/9j/4AAQ", "R0lGODlh", "AAAA"]
    content = chat_request({"messages": [{**USER, "images": images}]}, vision)["messages"][0]["content"]
    urls = [part["image_url"]["url"] for part in content[1:]]
    assert [u.split(";")[0] for u in urls] == ["data:image/png", "data:image/jpeg", "data:image/gif", "data:image/jpeg"]
    assert all(url.endswith(f"base64,{image}") for url, image in zip(urls, images, strict=True))
