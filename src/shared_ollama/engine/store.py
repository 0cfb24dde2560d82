"""The embedded engine's model store: Ollama-style names, JSON manifests, content-addressed blobs.

Layout::

    <root>/manifests/<name>/<tag>.json
    <root>/blobs/sha256-<hex>

A manifest names its GGUF blob (and optional projector blob) and carries the metadata read once at install
time, plus the derived-model fields (system, template, parameters, messages, parent).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from shared_ollama.engine.capabilities import GGUF_FIND, gguf_facts
from shared_ollama.engine.gguf_read import read_gguf
from shared_ollama.protocol.names import canonical_model

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]*(:[A-Za-z0-9][A-Za-z0-9._\-]*)?$")
_DIGEST_TEXT = re.compile(rb"sha256:[0-9a-f]{64}")
"""A digest as manifests write it: whatever field names it, the blob is in use."""
_SKIPPED_KEYS = ("general.name", "tokenizer.chat_template")
"""GGUF keys left out of ``model_info`` (as Ollama's /api/show does); arrays are left out too."""


def normalize_name(name: str) -> str:
    """``all-minilm`` -> ``all-minilm:latest``. Raises ValueError for names that are not Ollama-style."""
    name = name.strip()
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"invalid model name {name!r}")
    return canonical_model(name)


def utc_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class ModelEntry:
    name: str
    digest: str
    """sha256 of the GGUF blob, ``sha256:<hex>``."""
    size: int
    capabilities: list[str]
    family: str = ""
    parameter_size: str = ""
    quantization_level: str = ""
    context_length: int = 0
    embedding_length: int = 0
    projector: str | None = None
    adapters: list[str] = field(default_factory=list)
    """sha256 digests of LoRA adapter GGUF blobs llama.cpp applies to the model at load (``/api/create``)."""
    splits: list[str] = field(default_factory=list)
    """A split GGUF's other parts (``digest`` is the first), in order; llama.cpp loads them via ``model_path``."""
    parent: str | None = None
    system: str | None = None
    template: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    license: list[str] = field(default_factory=list)
    modified_at: str = field(default_factory=utc_now)
    format: str = "gguf"
    model_info: dict[str, Any] = field(default_factory=dict)
    """Scalar GGUF metadata (``general.architecture``, ``llama.block_count``...), read once at install time."""
    chat_template: str = ""
    """The GGUF file's own Jinja chat template (``template`` is a derived model's replacement for it)."""
    fim_tokens: list[int] = field(default_factory=list)
    """The vocabulary's fill-in-the-middle (prefix, suffix, middle) token ids; empty without them (no ``insert``)."""

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> ModelEntry:
        raw = orjson.loads(data)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


def human_count(count: int) -> str:
    """Parameter count as Ollama prints it: ``134.52M``, ``8.0B``."""
    if count >= 1_000_000_000:
        return f"{count / 1e9:.1f}B"
    if count >= 1_000_000:
        return f"{count / 1e6:.2f}M"
    if count >= 1_000:
        return f"{count / 1e3:.2f}K"
    return str(count)


def _quantization(file_type: int | None) -> str:
    from gguf import LlamaFileType

    if file_type is None:
        return ""
    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return str(file_type)
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def gguf_metadata(path: Path) -> dict[str, Any]:
    """Family, parameter size, quantisation, context length and scalar metadata from a GGUF file's header;
    NotGGUF (a ValueError) for a file that is not a whole GGUF."""
    header = read_gguf(path, GGUF_FIND)
    info = {k: v for k, v in header.metadata.items() if not k.startswith("GGUF.") and k not in _SKIPPED_KEYS}
    parameters = sum(math.prod(tensor.dims) for tensor in header.tensors)
    info.setdefault("general.parameter_count", parameters)
    arch = str(info.get("general.architecture") or "")
    file_type = info.get("general.file_type")
    return {
        **gguf_facts(header),
        "family": arch,
        "parameter_size": human_count(parameters) if parameters else str(info.get("general.size_label") or ""),
        "quantization_level": _quantization(int(file_type) if file_type is not None else None),
        "context_length": int(info.get(f"{arch}.context_length") or 0),
        "embedding_length": int(info.get(f"{arch}.embedding_length") or 0),
        "model_info": info,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    def _manifest_path(self, name: str) -> Path:
        full = normalize_name(name)
        model, tag = full.rsplit(":", 1)
        return self.manifests / model / f"{tag}.json"

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.replace(":", "-")

    def model_path(self, entry: ModelEntry) -> Path:
        """The file llama.cpp loads for ``entry``: its blob, or for a split GGUF the first of links named as
        llama.cpp finds the parts (``<prefix>-00001-of-0000N.gguf`` beside each other), made when missing."""
        first = self.blob_path(entry.digest)
        if not entry.splits:
            return first
        count = len(entry.splits) + 1
        for index, digest in enumerate([entry.digest, *entry.splits], start=1):
            link = first.with_name(f"{first.name}-{index:05d}-of-{count:05d}.gguf")
            if not link.is_symlink():
                with contextlib.suppress(FileExistsError):  # made by a concurrent load
                    link.symlink_to(self.blob_path(digest).name)
        return first.with_name(f"{first.name}-00001-of-{count:05d}.gguf")

    def list(self) -> list[ModelEntry]:
        if not self.manifests.is_dir():
            return []
        entries = []
        for path in sorted(self.manifests.rglob("*.json")):
            try:
                entries.append(ModelEntry.from_json(path.read_bytes()))
            except (OSError, ValueError, TypeError):
                continue
        return entries

    def get(self, name: str) -> ModelEntry | None:
        try:
            path = self._manifest_path(name)
        except ValueError:
            return None
        try:
            return ModelEntry.from_json(path.read_bytes())
        except (OSError, ValueError, TypeError):
            pass
        wanted = normalize_name(name).lower()  # Ollama matches names case-insensitively
        return next((e for e in self.list() if e.name.lower() == wanted), None)

    def put(self, entry: ModelEntry) -> None:
        path = self._manifest_path(entry.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
            tmp.write(entry.to_json())
        os.replace(tmp.name, path)

    def add_blob(self, source: Path) -> tuple[str, int]:
        """Copy ``source`` into the blobs (content-addressed, idempotent); returns (digest, size)."""
        digest = "sha256:" + _sha256(source)
        target = self.blob_path(digest)
        if not target.exists():
            self.blobs.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".partial-")
            os.close(handle)
            try:
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
            finally:
                Path(tmp).unlink(missing_ok=True)
        return digest, target.stat().st_size

    def add_gguf(
        self,
        name: str,
        gguf_path: Path,
        *,
        capabilities: list[str],
        projector_path: Path | None = None,
        **extra: Any,
    ) -> ModelEntry:
        """Install a GGUF file (and an optional multimodal projector) under ``name``; idempotent.

        ``extra`` sets the other manifest fields: system, template, parameters, messages, parent...
        """
        digest, size = self.add_blob(gguf_path)
        metadata = gguf_metadata(self.blob_path(digest))
        if projector_path is not None:
            projector, projector_size = self.add_blob(projector_path)
            metadata["projector"] = projector
            size += projector_size
            if "vision" not in capabilities:
                capabilities = [*capabilities, "vision"]
        entry = ModelEntry(
            name=normalize_name(name),
            digest=digest,
            size=size,
            capabilities=capabilities,
            **{**metadata, **extra},
        )
        self.put(entry)
        return entry

    def copy(self, source: str, destination: str) -> ModelEntry | None:
        """A new name for an existing model (blobs are shared); None when ``source`` does not exist."""
        entry = self.get(source)
        if entry is None:
            return None
        copied = replace(entry, name=normalize_name(destination), modified_at=utc_now())
        self.put(copied)
        return copied

    def remove(self, name: str) -> bool:
        """Delete a model's manifest, and its blobs when no other manifest uses them."""
        entry = self.get(name)
        if entry is None:
            return False
        self._manifest_path(entry.name).unlink()
        self.prune(entry.digest, entry.projector, *entry.adapters, *entry.splits)
        return True

    def replace(self, entry: ModelEntry) -> ModelEntry | None:
        """Write ``entry``, replacing any model of that name (whatever its case); returns the one replaced.

        Blobs only the replaced model used are deleted.
        """
        old = self.get(entry.name)
        self.put(entry)
        if old is not None and old.name != entry.name:
            self._manifest_path(old.name).unlink(missing_ok=True)
        if old is not None:
            self.prune(old.digest, old.projector, *old.adapters, *old.splits)
        return old

    def used_digests(self) -> set[str]:
        """Every digest any manifest names, in any field (an unparsable manifest's too); OSError when a manifest
        cannot be read (then no blob may be taken for unused)."""
        if not self.manifests.is_dir():
            return set()
        used: set[str] = set()
        for path in self.manifests.rglob("*.json"):
            used.update(match.decode() for match in _DIGEST_TEXT.findall(path.read_bytes()))
        return used

    def prune(self, *digests: str | None) -> None:
        """Delete those of ``digests``' blobs that no manifest uses any more (none when a manifest is unreadable)."""
        try:
            used = self.used_digests()
        except OSError:
            return
        for digest in digests:
            if digest and digest not in used:
                self.blob_path(digest).unlink(missing_ok=True)
                for link in self.blobs.glob(f"{self.blob_path(digest).name}-*-of-*.gguf"):
                    link.unlink(missing_ok=True)  # a split model's part names (model_path)
