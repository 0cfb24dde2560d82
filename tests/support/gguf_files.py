"""GGUF files the pull tests serve: a real model split into parts, and header-only models of any architecture.

- ``split_gguf``: SmolLM2 rewritten by the ``gguf`` package's writer as a split GGUF (``-00001-of-0000N.gguf``),
  the way big models are published on Hugging Face; llama.cpp loads it from the first part.
- ``filler_gguf``: a GGUF of the named architecture with one large tensor of zeros: enough for the pull's header
  check and the store's metadata, and big enough that a pull refused after its first megabyte has clearly not
  fetched the rest (it is never loaded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter


def split_gguf(source: Path, target: Path, parts: int) -> list[Path]:
    """Write ``source`` as ``parts`` files named after ``target`` (``<stem>-0000i-of-0000N.gguf``)."""
    reader = GGUFReader(str(source))
    arch = str(reader.fields["general.architecture"].contents())
    per_part = -(-len(reader.tensors) // parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(target), arch, split_max_tensors=per_part)
    for item in reader.fields.values():
        if item.name.startswith(("GGUF.", "split.")) or item.name == "general.architecture":
            continue
        kind = item.types[0]
        writer.add_key_value(
            item.name, item.contents(), kind, sub_type=item.types[-1] if kind == GGUFValueType.ARRAY else None
        )
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return [target.with_name(f"{target.stem}-{i:05d}-of-{parts:05d}.gguf") for i in range(1, parts + 1)]


def filler_gguf(path: Path, arch: str, megabytes: int) -> Path:
    """A GGUF whose header says ``arch``, holding one ``megabytes`` MiB tensor of zeros."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(path), arch)
    writer.add_context_length(2048)
    writer.add_tensor("filler.weight", np.zeros((megabytes, 1 << 18), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def variant(source: Path, target: Path, tag: str) -> Path:
    """A copy of ``source`` with ``tag`` appended after its tensor data: the same model to llama.cpp, another
    digest to the store (so a pull of it really downloads)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as original, open(target, "wb") as copy:
        while block := original.read(8 << 20):
            copy.write(block)
        copy.write(f"variant:{tag}".encode())
    return target
