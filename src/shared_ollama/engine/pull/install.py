"""A pulled model's store entry, from blobs already in the store (nothing is copied).

Family, parameter size, quantisation, context length, chat template and fill-in-the-middle tokens come from the
GGUF's header, as for every model in the store. A model whose GGUF names a pooling type is an embedding model
(Ollama's rule); a projector adds ``vision``. A split GGUF's parameter count is the sum over its parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from shared_ollama.engine.gguf_read import read_gguf
from shared_ollama.engine.store import ModelEntry, ModelStore, gguf_metadata, human_count, normalize_name


@dataclass
class Pulled:
    name: str
    parts: list[str]
    """The model's GGUF blob digests (one, or a split's parts in order)."""
    projector: str | None = None
    adapters: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    """Manifest fields from the source: system, parameters, messages, license."""


def _parameter_count(store: ModelStore, digests: list[str]) -> int:
    return sum(math.prod(t.dims) for d in digests for t in read_gguf(store.blob_path(d)).tensors)


def install(store: ModelStore, pulled: Pulled) -> tuple[ModelEntry, ModelEntry | None]:
    """Write the entry for ``pulled`` (replacing a model of that name); returns it and the one replaced."""
    metadata = gguf_metadata(store.blob_path(pulled.parts[0]))
    if len(pulled.parts) > 1:
        count = _parameter_count(store, pulled.parts)
        metadata["model_info"]["general.parameter_count"] = count
        metadata["parameter_size"] = human_count(count)
    arch = str(metadata["model_info"].get("general.architecture") or "")
    capabilities = ["embedding"] if f"{arch}.pooling_type" in metadata["model_info"] else ["completion"]
    if pulled.projector is not None:
        capabilities.append("vision")
    blobs = [*pulled.parts, *([pulled.projector] if pulled.projector else []), *pulled.adapters]
    entry = ModelEntry(
        name=normalize_name(pulled.name),
        digest=pulled.parts[0],
        size=sum(store.blob_path(d).stat().st_size for d in blobs),
        capabilities=capabilities,
        projector=pulled.projector,
        adapters=list(pulled.adapters),
        splits=pulled.parts[1:],
        **{**metadata, **pulled.fields},
    )
    return entry, store.replace(entry)
