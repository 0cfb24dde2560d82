"""A tiny random LoRA adapter GGUF for a base model, written with the ``gguf`` library as llama.cpp reads one.

``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``, and for each adapted weight ``W`` of
the base model a pair ``W.lora_a`` (numpy shape ``(rank, n_in)``, GGUF ``[n_in, rank]``) and ``W.lora_b``
(numpy ``(n_out, rank)``). The weights are random (seeded), large enough that the model's output changes.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from shared_ollama.engine.lora import read_header

ADAPTED = ("attn_q.weight", "ffn_down.weight")
"""The weights of each block the adapter changes."""


def write_lora(
    path: Path,
    base: Path,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    seed: int = 0,
    architecture: str | None = None,
    weights: tuple[str, ...] = ADAPTED,
) -> Path:
    """A LoRA GGUF at ``path`` for the model GGUF ``base`` (``architecture`` overrides the base's, to make a
    mismatched one); returns ``path``."""
    header = read_header(base)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch=architecture or header.architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, shape in sorted(header.tensors.items()):
        if not name.endswith(weights) or len(shape) != 2:
            continue
        n_in, n_out = shape
        writer.add_tensor(f"{name}.lora_a", (rng.standard_normal((rank, n_in)) / np.sqrt(n_in)).astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", (rng.standard_normal((n_out, rank)) / np.sqrt(rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
