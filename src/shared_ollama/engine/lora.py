"""LoRA adapters: what a GGUF file is (model, projector or adapter), whether an adapter fits its base model,
and the adapters llama.cpp applies when the model loads.

llama.cpp reads a LoRA adapter from a GGUF file with ``general.type = "adapter"``, ``adapter.type = "lora"``,
``adapter.lora.alpha`` and, for each adapted weight ``W`` of the base model, a pair of tensors ``W.lora_a``
(shape ``[n_in, rank]`` in GGUF order) and ``W.lora_b`` (``[rank, n_out]``); its architecture must be the base
model's. An adapter that does not fit is refused at create time with the reason, not at the first load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_ollama.engine.gguf_read import read_gguf
from shared_ollama.engine.store import ModelEntry

GGUF_MAGIC = b"GGUF"
Shape = tuple[int, ...]


class AdapterMismatch(ValueError):
    """The adapter cannot apply to the base model (the message says why)."""


@dataclass
class GgufHeader:
    """What create needs from a GGUF file's header: its kind, architecture and tensor shapes (GGUF order)."""

    kind: str
    """``model``, ``projector`` or ``adapter``."""
    architecture: str
    tensors: dict[str, Shape] = field(default_factory=dict)
    adapter_type: str = ""
    split_count: int = 0


def file_kind(general_type: str, architecture: str) -> str:
    """A GGUF's kind from ``general.type`` and ``general.architecture`` (Ollama's rules: an adapter by its type,
    a projector by its type or the ``clip`` architecture llama.cpp's projectors have, else a model)."""
    if general_type == "adapter":
        return "adapter"
    if general_type in ("mmproj", "projector") or architecture == "clip":
        return "projector"
    return "model"


def read_header(path: Path) -> GgufHeader:
    """The header of the GGUF file at ``path``; ValueError when it is not a GGUF file."""
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ValueError("not a GGUF file (only GGUF models and adapters can be imported)")
    header = read_gguf(path)  # the header only (the library's reader parses every value: seconds per model)
    metadata = header.metadata

    def text(key: str) -> str:
        value = metadata.get(key, "")
        return value if isinstance(value, str) else ""

    split = metadata.get("split.count")
    arch = text("general.architecture")
    return GgufHeader(
        kind=file_kind(text("general.type"), arch),
        architecture=arch,
        tensors={t.name: tuple(t.dims) for t in header.tensors},
        adapter_type=text("adapter.type"),
        split_count=int(split) if split is not None else 0,
    )


def check_adapter(adapter: GgufHeader, base: GgufHeader) -> None:
    """Raise AdapterMismatch unless llama.cpp can apply ``adapter`` (a LoRA GGUF) to ``base`` (a model GGUF)."""
    if adapter.kind != "adapter" or adapter.adapter_type != "lora":
        raise AdapterMismatch("not a LoRA adapter (general.type must be 'adapter' and adapter.type 'lora')")
    if adapter.architecture != base.architecture:
        raise AdapterMismatch(
            f"adapter architecture '{adapter.architecture}' does not match the model's '{base.architecture}'"
        )
    pairs: dict[str, dict[str, Shape]] = {}
    for name, shape in adapter.tensors.items():
        weight, dot, part = name.rpartition(".")
        if dot and part in ("lora_a", "lora_b"):
            pairs.setdefault(weight, {})[part] = shape
        elif not name.endswith("_norm.weight"):  # llama.cpp skips norm vectors and refuses anything else
            raise AdapterMismatch(f"adapter tensor '{name}' is neither a .lora_a nor a .lora_b tensor")
    if not pairs:
        raise AdapterMismatch("the adapter has no lora_a / lora_b tensors")
    for weight, pair in sorted(pairs.items()):
        if len(pair) != 2:
            raise AdapterMismatch(f"adapter tensor pair for '{weight}' is missing one of lora_a / lora_b")
        target = base.tensors.get(weight)
        if target is None or len(target) < 2:
            raise AdapterMismatch(f"adapter tensor '{weight}' does not exist in the model (wrong base model?)")
        a, b = pair["lora_a"], pair["lora_b"]
        if weight.endswith("token_embd.weight"):  # llama.cpp keeps B untransposed for the embedding table
            fits = target[0] == b[1] and target[1] == a[1]
        else:
            fits = target[0] == a[0] and target[1] == b[1] and a[1] == b[0]
        if not fits:
            raise AdapterMismatch(
                f"adapter tensors for '{weight}' have shapes {list(a)} / {list(b)}, which do not fit the model's "
                f"{list(target)} (wrong base model?)"
            )


def lora_params(entry: ModelEntry, blobs: Path) -> list[Any]:
    """llama.cpp's adapter list for ``entry`` (each applied at scale 1, as Ollama's ``ADAPTER`` is)."""
    import xllamacpp

    return [xllamacpp.CommonAdapterLoraInfo(str(blobs / d.replace(":", "-")), 1.0) for d in entry.adapters]
