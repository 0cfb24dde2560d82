"""A GGUF's architecture from its first bytes, and which architectures llama.cpp loads."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from shared_ollama.engine.pull.gguf_header import NotGGUF, architecture, llama_cpp_architectures, unsupported
from tests.support.gguf_files import filler_gguf


def _kv_string(key: str, value: str) -> bytes:
    return (
        struct.pack("<Q", len(key))
        + key.encode()
        + struct.pack("<I", 8)
        + struct.pack("<Q", len(value))
        + value.encode()
    )


def _header(*kvs: bytes) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)


def test_the_architecture_of_a_file_the_gguf_writer_made(tmp_path: Path) -> None:
    path = filler_gguf(tmp_path / "m.gguf", "qwen3", 1)
    assert architecture(path.read_bytes()[:4096]) == "qwen3"


def test_keys_before_the_architecture_are_skipped_whatever_their_type() -> None:
    array = (
        struct.pack("<Q", 5) + b"names" + struct.pack("<I", 9) + struct.pack("<IQ", 8, 2)
        + struct.pack("<Q", 1) + b"a" + struct.pack("<Q", 2) + b"bc"
    )  # fmt: skip
    numbers = struct.pack("<Q", 4) + b"nums" + struct.pack("<I", 9) + struct.pack("<IQ", 4, 3) + b"\0" * 12
    scalar = struct.pack("<Q", 3) + b"one" + struct.pack("<I", 4) + struct.pack("<I", 1)
    data = _header(array, numbers, scalar, _kv_string("general.architecture", "gemma3"))
    assert architecture(data) == "gemma3"
    assert architecture(data[:-3]) is None  # cut inside the value: more bytes are needed


def test_a_short_prefix_is_not_enough_and_other_bytes_are_not_a_gguf() -> None:
    assert architecture(b"GGU") is None
    assert architecture(_header(_kv_string("general.architecture", "llama"))[:30]) is None
    with pytest.raises(NotGGUF, match="no GGUF magic"):
        architecture(b"<html>not a model</html>" + b"\0" * 64)
    with pytest.raises(NotGGUF, match="version 1"):
        architecture(b"GGUF" + struct.pack("<IQQ", 1, 0, 0))


def test_a_file_without_an_architecture_tells_nothing() -> None:
    assert architecture(_header(_kv_string("general.name", "x"))) is None


def test_llama_cpp_loads_what_the_gguf_package_names_but_not_projectors_or_ollama_only_models() -> None:
    known = llama_cpp_architectures()
    assert {"llama", "qwen3", "gemma3", "qwen2vl"} <= known
    assert unsupported("llama") is None
    assert "clip" not in known and "projector" in (unsupported("clip") or "")
    why = unsupported("mllama") or ""
    assert "architecture 'mllama' is not one llama.cpp can load" in why and "real Ollama" in why
