"""Ollama's registry: a model's manifest (``GET /v2/<namespace>/<model>/manifests/<tag>``) and its blobs
(``GET /v2/<namespace>/<model>/blobs/<digest>``, which the registry may redirect to a CDN).

A manifest (Docker's v2 schema) names a config blob and layers by media type; they map into the store as:

- ``application/vnd.ollama.image.model``: the GGUF (``digest``); ``...projector``: the projector (vision);
  ``...adapter``: LoRA adapters (``adapters``, applied by llama.cpp at load);
- ``...system``: the system prompt; ``...params``: parameters (JSON); ``...messages``: messages (JSON);
  ``...license``: license texts;
- ``...template`` (or the older ``...prompt``): Ollama's Go template, which llama.cpp cannot run: the model keeps
  the GGUF's own Jinja chat template, and the pull says so;
- ``...tensor`` (safetensors, for Ollama's MLX engine): refused, naming the layer;
  ``...embed`` (deprecated) and ``...draft`` (a draft model): skipped, as a progress line says.

The config blob (``model_format``, ``model_family``) lets a model llama.cpp cannot load be refused before its
weights are fetched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from shared_ollama.engine.pull.gguf_header import unsupported
from shared_ollama.errors import BackendError, InvalidRequest
from shared_ollama.protocol.modelfile import ROLES, coerce_parameter

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
_PREFIX = "application/vnd.ollama.image."
MODEL, PROJECTOR, ADAPTER = _PREFIX + "model", _PREFIX + "projector", _PREFIX + "adapter"
SYSTEM, PARAMS, MESSAGES, LICENSE = _PREFIX + "system", _PREFIX + "params", _PREFIX + "messages", _PREFIX + "license"
TEMPLATES = (_PREFIX + "template", _PREFIX + "prompt")
TEXTS = (SYSTEM, PARAMS, MESSAGES, LICENSE, *TEMPLATES)
SKIPPED = {_PREFIX + "embed": "embeddings layer (deprecated by Ollama)", _PREFIX + "draft": "draft model"}
REFUSED = {_PREFIX + "tensor": "safetensors weights (for Ollama's MLX engine)"}
MAX_TEXT_LAYER = 4 << 20
"""Largest text layer (system, params, messages, license, template) read into memory."""


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int


@dataclass
class Plan:
    model: Layer
    projector: Layer | None = None
    adapters: list[Layer] = field(default_factory=list)
    texts: list[Layer] = field(default_factory=list)
    skipped: list[Layer] = field(default_factory=list)
    config: Layer | None = None

    @property
    def weights(self) -> list[Layer]:
        """The layers written to the store as blobs (the rest are read into the manifest)."""
        return [self.model, *([self.projector] if self.projector else []), *self.adapters]


def _layer(raw: Any) -> Layer:
    if not isinstance(raw, dict):
        raise BackendError("the registry sent a manifest layer that is not an object")
    digest, size, media = raw.get("digest"), raw.get("size"), raw.get("mediaType")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise BackendError(f"the registry sent a layer with an invalid digest: {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(media, str):
        raise BackendError(f"the registry sent an invalid layer for {digest}")
    return Layer(media, digest, size)


def plan(manifest: bytes, name: str) -> Plan:
    """What to fetch for a manifest, by layer; refuses layers the embedded engine cannot use."""
    try:
        data = orjson.loads(manifest)
    except orjson.JSONDecodeError:
        raise BackendError(f"the registry sent a manifest for '{name}' that is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
        raise BackendError(f"the registry sent a manifest for '{name}' without layers")
    layers = [_layer(raw) for raw in data["layers"]]
    config = _layer(data["config"]) if isinstance(data.get("config"), dict) else None
    models = [layer for layer in layers if layer.media_type == MODEL]
    if len(models) != 1:
        raise InvalidRequest(f"'{name}' has {len(models)} model layers; the embedded engine runs one GGUF per model")
    result = Plan(models[0], config=config)
    for layer in layers:
        if layer.media_type in REFUSED:
            raise InvalidRequest(f"'{name}' has {REFUSED[layer.media_type]}, which the embedded engine cannot use")
        if layer.media_type == PROJECTOR:
            if result.projector is not None:
                raise InvalidRequest(f"'{name}' has several projectors; the embedded engine loads one")
            result.projector = layer
        elif layer.media_type == ADAPTER:
            result.adapters.append(layer)
        elif layer.media_type in TEXTS:
            if layer.size > MAX_TEXT_LAYER:
                raise BackendError(f"the {layer.media_type} layer of '{name}' is {layer.size} bytes, too large")
            result.texts.append(layer)
        elif layer.media_type != MODEL:
            result.skipped.append(layer)
    return result


def check_config(config: bytes, name: str) -> None:
    """Refuse, from the config blob, a model that is not a GGUF or whose family llama.cpp cannot load."""
    try:
        data = orjson.loads(config)
    except orjson.JSONDecodeError:
        return  # an unreadable config tells nothing; the GGUF header will
    if not isinstance(data, dict):
        return
    model_format = data.get("model_format")
    if isinstance(model_format, str) and model_format and model_format.lower() != "gguf":
        raise InvalidRequest(f"'{name}' is a {model_format} model; the embedded engine (llama.cpp) runs GGUF only")
    family = data.get("model_family")
    if isinstance(family, str) and family:
        why = unsupported(family)
        if why is not None:
            raise InvalidRequest(f"cannot run '{name}': {why}")


def _text(blob: bytes, what: str, name: str) -> str:
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError:
        raise BackendError(f"the {what} layer of '{name}' is not UTF-8 text") from None


def _json(blob: bytes, what: str, name: str) -> Any:
    try:
        return orjson.loads(blob)
    except orjson.JSONDecodeError:
        raise BackendError(f"the {what} layer of '{name}' is not JSON") from None


def fields_from_texts(texts: list[tuple[str, bytes]], name: str) -> tuple[dict[str, Any], bool]:
    """Store fields from the text layers (media type, content): system, parameters, messages, license; and
    whether there was a Go template (kept aside: the GGUF's Jinja template is used)."""
    fields: dict[str, Any] = {}
    licenses: list[str] = []
    had_template = False
    for media_type, blob in texts:
        if media_type in TEMPLATES:
            had_template = True
        elif media_type == SYSTEM:
            fields["system"] = _text(blob, "system", name) or None
        elif media_type == LICENSE:
            licenses.append(_text(blob, "license", name))
        elif media_type == PARAMS:
            raw = _json(blob, "params", name)
            if not isinstance(raw, dict):
                raise BackendError(f"the params layer of '{name}' is not a JSON object")
            try:
                fields["parameters"] = {str(k): coerce_parameter(str(k), v) for k, v in raw.items() if v is not None}
            except ValueError as exc:
                raise BackendError(f"the params layer of '{name}' has a parameter llama.cpp cannot use: {exc}") from exc
        elif media_type == MESSAGES:
            raw = _json(blob, "messages", name)
            if not isinstance(raw, list) or not all(
                isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content", ""), str) for m in raw
            ):
                raise BackendError(f"the messages layer of '{name}' is not a list of {{role, content}} messages")
            fields["messages"] = [{"role": m["role"], "content": m.get("content") or ""} for m in raw]
    if licenses:
        fields["license"] = licenses
    return fields, had_template
