"""Models made from uploaded files: the ``files`` and ``adapters`` of Ollama's ``/api/create``.

``files`` maps file names to blobs uploaded first (``POST /api/blobs/sha256:<hex>``): exactly one model GGUF
becomes the model, a projector GGUF among them its multimodal projector (the model gains vision), and a LoRA
adapter GGUF among them is applied as if it were in ``adapters``. ``adapters`` are LoRA GGUFs applied to the model
by llama.cpp at load; they may be added to a model from the store (``from``) as well. Each file is checked when
the model is created (a GGUF, not split, of the kind its place needs; an adapter fits its model), so a model that
could not load is a 400 now rather than a failure at its first request. Blocking (reads GGUF headers): run in a
worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from shared_ollama.engine.lora import AdapterMismatch, GgufHeader, check_adapter, read_header
from shared_ollama.engine.store import ModelEntry, ModelStore, gguf_metadata
from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.blobs import file_digests

JsonDict = dict[str, Any]
ENCODER_ARCHITECTURES = frozenset({"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "modern-bert", "t5encoder"})
"""Architectures llama.cpp runs only as encoders: their models embed, they do not complete."""


class CreateRefused(InvalidRequest):
    """A create body whose files cannot make a model (a 400 saying which file and why)."""


@dataclass
class _Files:
    """The blobs of a create body, sorted by what they are."""

    models: list[tuple[str, str]] = field(default_factory=list)
    projectors: list[tuple[str, str]] = field(default_factory=list)
    adapters: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, GgufHeader] = field(default_factory=dict)


def model_capabilities(model_info: JsonDict) -> list[str]:
    """``embedding`` for a model that pools its output (or an encoder-only architecture), else ``completion``."""
    arch = str(model_info.get("general.architecture") or "")
    pooling = model_info.get(f"{arch}.pooling_type")
    pools = isinstance(pooling, int) and not isinstance(pooling, bool) and pooling > 0
    return ["embedding"] if arch in ENCODER_ARCHITECTURES or pools else ["completion"]


def _header(store: ModelStore, digest: str, where: str, param: str | None = None) -> GgufHeader:
    """The header of blob ``digest`` (``where`` names it in errors: ``'files' 'model.gguf'``)."""
    path = store.blob_path(digest)
    if not path.is_file():
        raise CreateRefused(
            f"{where}: blob {digest} was not found on the server; upload it first (POST /api/blobs/{digest})",
            param=param,
        )
    try:
        header = read_header(path)
    except (OSError, ValueError) as exc:
        raise CreateRefused(f"{where}: {exc}", param=param) from None
    if header.split_count > 1:
        raise CreateRefused(
            f"{where}: a split GGUF ({header.split_count} parts) cannot be imported from files; merge it first "
            "(llama-gguf-split --merge)",
            param=param,
        )
    return header


def _sort(store: ModelStore, files: dict[str, str], adapters: dict[str, str]) -> _Files:
    found = _Files()
    for name, digest in sorted(files.items()):
        header = _header(store, digest, f"'files' {name!r}", "files")
        found.headers[digest] = header
        {"model": found.models, "projector": found.projectors, "adapter": found.adapters}[header.kind].append(
            (name, digest)
        )
    for name, digest in sorted(adapters.items()):
        header = _header(store, digest, f"'adapters' {name!r}", "adapters")
        if header.kind != "adapter":
            raise CreateRefused(f"'adapters' {name!r}: a {header.kind} GGUF, not a LoRA adapter", param="adapters")
        found.headers[digest] = header
        found.adapters.append((name, digest))
    if len(found.projectors) > 1:
        names = ", ".join(name for name, _ in found.projectors)
        raise CreateRefused(f"'files': more than one projector GGUF ({names}); a model has one", param="files")
    return found


def _from_files(store: ModelStore, name: str, found: _Files) -> ModelEntry:
    if len(found.models) != 1:
        listed = ", ".join(n for n, _ in found.models) or "none"
        raise CreateRefused(f"'files' must hold exactly one model GGUF (found: {listed})", param="files")
    digest = found.models[0][1]
    path = store.blob_path(digest)
    metadata = gguf_metadata(path)
    capabilities = model_capabilities(metadata["model_info"])
    projector = found.projectors[0][1] if found.projectors else None
    size = path.stat().st_size
    if projector is not None:
        size += store.blob_path(projector).stat().st_size
        capabilities.append("vision")
    return ModelEntry(name=name, digest=digest, size=size, capabilities=capabilities, projector=projector, **metadata)


def with_files(store: ModelStore, name: str, body: JsonDict, base: ModelEntry | None) -> ModelEntry:
    """The model ``name`` that ``body``'s ``files`` and ``adapters`` make (over ``base``, the ``from`` model, when
    given); its system prompt, template and parameters are still to be applied (``manage.derive``)."""
    files = file_digests(body.get("files"), "files")
    adapters = file_digests(body.get("adapters"), "adapters")
    if base is not None and files:
        raise CreateRefused("give either 'from' (a model in the store) or 'files' (uploaded blobs), not both")
    found = _sort(store, files, adapters)
    if base is None:
        if not files:
            raise CreateRefused("'from' or 'files' is required: a model in the store, or uploaded GGUF blobs")
        base = _from_files(store, name, found)
    elif found.projectors:
        raise CreateRefused("a projector can only come with its model's GGUF in 'files'", param="files")
    added = [d for _, d in found.adapters if d not in base.adapters]
    model = _header(store, base.digest, "the model") if found.adapters else None
    for adapter_name, digest in found.adapters if model is not None else []:
        try:
            check_adapter(found.headers[digest], model)
        except AdapterMismatch as exc:
            raise CreateRefused(
                f"adapter {adapter_name!r} cannot apply to the model: {exc}", param="adapters"
            ) from None
    size = base.size + sum(store.blob_path(d).stat().st_size for d in dict.fromkeys(added))
    return replace(base, adapters=[*base.adapters, *dict.fromkeys(added)], size=size)
