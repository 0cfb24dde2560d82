"""The embedded engine's model store: Ollama-style names, JSON manifests, content-addressed blobs.

Layout::

    <root>/manifests/<name>/<tag>.json
    <root>/blobs/sha256-<hex>

A manifest names its GGUF blob (and optional projector blob) and carries the metadata read once at install
time, plus the derived-model fields (system, template, parameters, messages, parent).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]*(:[A-Za-z0-9][A-Za-z0-9._\-]*)?$")
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 15: "Q4_K_M", 17: "Q5_K_M"}


def normalize_name(name: str) -> str:
    """``all-minilm`` -> ``all-minilm:latest``. Raises ValueError for names that are not Ollama-style."""
    name = name.strip()
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"invalid model name {name!r}")
    return name if ":" in name else f"{name}:latest"


def _now() -> str:
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
    parent: str | None = None
    system: str | None = None
    template: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    modified_at: str = field(default_factory=_now)
    format: str = "gguf"

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> ModelEntry:
        raw = orjson.loads(data)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


def gguf_metadata(path: Path) -> dict[str, Any]:
    """Family, size label, quantisation and context length from a GGUF file's header."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field_value(key: str) -> Any:
        item = reader.fields.get(key)
        return item.contents() if item is not None else None

    arch = str(field_value("general.architecture") or "")
    file_type = field_value("general.file_type")
    return {
        "family": arch,
        "parameter_size": str(field_value("general.size_label") or ""),
        "quantization_level": _FILE_TYPES.get(int(file_type), str(file_type)) if file_type is not None else "",
        "context_length": int(field_value(f"{arch}.context_length") or 0),
        "embedding_length": int(field_value(f"{arch}.embedding_length") or 0),
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
            return None

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
            tmp = target.with_suffix(".partial")
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        return digest, target.stat().st_size

    def add_gguf(self, name: str, gguf_path: Path, *, capabilities: list[str], **extra: Any) -> ModelEntry:
        digest, size = self.add_blob(gguf_path)
        entry = ModelEntry(
            name=normalize_name(name),
            digest=digest,
            size=size,
            capabilities=capabilities,
            **{**gguf_metadata(self.blob_path(digest)), **extra},
        )
        self.put(entry)
        return entry

    def remove(self, name: str) -> bool:
        """Delete a model's manifest, and its blobs when no other manifest uses them."""
        entry = self.get(name)
        if entry is None:
            return False
        self._manifest_path(name).unlink()
        used = {e.digest for e in self.list()} | {e.projector for e in self.list() if e.projector}
        for digest in (entry.digest, entry.projector):
            if digest and digest not in used:
                self.blob_path(digest).unlink(missing_ok=True)
        return True
