"""LoRA adapters: a GGUF's kind, whether an adapter fits its model (as llama.cpp checks it), and the adapters
llama.cpp is given at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_ollama.engine.lora import AdapterMismatch, GgufHeader, check_adapter, file_kind, lora_params, read_header
from shared_ollama.engine.tiny_vision import write_projector
from tests.support.engine import entry
from tests.support.tiny_lora import write_lora
from tests.unit.test_engine_store import write_gguf

BASE = GgufHeader("model", "llama", {"blk.0.attn_q.weight": (8, 6), "token_embd.weight": (8, 3)})


def _adapter(tensors: dict[str, tuple[int, ...]], arch: str = "llama", kind: str = "lora") -> GgufHeader:
    return GgufHeader("adapter", arch, tensors, adapter_type=kind)


@pytest.mark.parametrize(
    ("general_type", "arch", "kind"),
    [
        ("adapter", "llama", "adapter"),
        ("mmproj", "clip", "projector"),
        ("", "clip", "projector"),
        ("model", "llama", "model"),
        ("", "qwen2", "model"),
    ],
)
def test_file_kind(general_type: str, arch: str, kind: str) -> None:
    assert file_kind(general_type, arch) == kind


def test_headers_of_a_model_a_projector_and_an_adapter(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "m.gguf", width=8)
    header = read_header(model)
    assert (header.kind, header.architecture, header.split_count) == ("model", "llama", 0)
    assert header.tensors["output.weight"] == (5, 8), "shapes in GGUF (llama.cpp's ne) order"
    assert read_header(write_projector(tmp_path / "p.gguf", n_embd_text=8)).kind == "projector"
    adapter = read_header(write_lora(tmp_path / "l.gguf", model, rank=2, weights=("output.weight",)))
    assert (adapter.kind, adapter.adapter_type, adapter.architecture) == ("adapter", "lora", "llama")
    assert adapter.tensors == {"output.weight.lora_a": (5, 2), "output.weight.lora_b": (2, 8)}
    check_adapter(adapter, header)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(ValueError, match="not a GGUF file"):
        read_header(tmp_path / "x.safetensors")


def test_a_fitting_adapter_passes() -> None:
    check_adapter(
        _adapter(
            {
                "blk.0.attn_q.weight.lora_a": (8, 2),
                "blk.0.attn_q.weight.lora_b": (2, 6),
                "token_embd.weight.lora_a": (2, 3),  # the embedding table's pair is flipped (llama.cpp)
                "token_embd.weight.lora_b": (2, 8),
                "blk.0.attn_norm_norm.weight": (8,),
            }
        ),
        BASE,
    )


@pytest.mark.parametrize(
    ("adapter", "words"),
    [
        (GgufHeader("model", "llama", {}), "not a LoRA adapter"),
        (_adapter({}, kind="control_vector"), "not a LoRA adapter"),
        (_adapter({"blk.0.attn_q.weight.lora_a": (8, 2)}, arch="qwen2"), "architecture 'qwen2' does not match"),
        (_adapter({}), "no lora_a / lora_b tensors"),
        (_adapter({"blk.0.attn_q.weight.lora_a": (8, 2)}), "missing one of lora_a / lora_b"),
        (_adapter({"blk.0.attn_q.weight.extra": (8, 2)}), "neither a .lora_a nor a .lora_b"),
        (_adapter({"blk.9.attn_q.weight.lora_a": (8, 2), "blk.9.attn_q.weight.lora_b": (2, 6)}), "does not exist"),
        (_adapter({"blk.0.attn_q.weight.lora_a": (7, 2), "blk.0.attn_q.weight.lora_b": (2, 6)}), "do not fit"),
        (_adapter({"blk.0.attn_q.weight.lora_a": (8, 2), "blk.0.attn_q.weight.lora_b": (3, 6)}), "do not fit"),
        (_adapter({"token_embd.weight.lora_a": (2, 4), "token_embd.weight.lora_b": (2, 8)}), "do not fit"),
    ],
)
def test_adapters_that_do_not_fit_are_refused_with_the_reason(adapter: GgufHeader, words: str) -> None:
    with pytest.raises(AdapterMismatch, match=words):
        check_adapter(adapter, BASE)


def test_llama_cpp_gets_each_adapter_blob_at_scale_one(tmp_path: Path) -> None:
    model = entry(adapters=["sha256:" + "a" * 64, "sha256:" + "b" * 64])
    params = lora_params(model, tmp_path)
    assert [(p.path, p.scale) for p in params] == [
        (str(tmp_path / ("sha256-" + "a" * 64)), 1.0),
        (str(tmp_path / ("sha256-" + "b" * 64)), 1.0),
    ]
