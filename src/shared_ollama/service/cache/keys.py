"""Cache keys (pure): what in a request can change its answer, hashed.

The key covers the model and its digest (a re-created model does not serve an old answer), the messages (images
by the SHA-256 of their base64 text), prompt, system, suffix, template, tools, format, think, raw, context ...
and the options except those that only change how the engine runs (``RUNTIME_OPTIONS``), plus the tenant unless
the scope is ``shared``. Fields are dropped from the key by name (``NOT_IN_KEY``), not picked: a request field
this module does not know still separates entries. The context key is the same key with the last user
message's text left out: a request's semantic neighbourhood.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from shared_ollama.protocol.names import canonical_model

JsonDict = dict[str, Any]
SCOPES = ("tenant", "shared")
KEY_VERSION = 1
"""Changes when the key's layout does (old entries then simply stop matching)."""
NOT_IN_KEY = frozenset({"model", "stream", "keep_alive", "cache", "options", "messages", "images"})
"""Top-level fields that are not part of the key as they are (model, options, messages and images are, below)."""
RUNTIME_OPTIONS = frozenset(
    {"num_thread", "num_gpu", "main_gpu", "low_vram", "use_mmap", "use_mlock", "num_batch", "numa", "vocab_only"}
)
"""Options that change how the engine runs, not what it answers."""


def path_kind(request: JsonDict) -> str:
    """``chat`` when the request has messages, else ``generate``."""
    return "chat" if isinstance(request.get("messages"), list) else "generate"


def _image_hashes(images: object) -> list[str] | None:
    if not isinstance(images, list):
        return None
    out = []
    for image in images:
        data = image.encode() if isinstance(image, str) else image if isinstance(image, bytes) else None
        out.append(hashlib.sha256(data).hexdigest() if data is not None else orjson.dumps(image).decode())
    return out


def _number(value: object) -> object:
    """0 and 0.0 (and 1 and 1.0) are the same option."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _last_user(messages: list[object]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "user":
            return i
    return None


def _canonical(request: JsonDict, tenant: str, scope: str, model_digest: str | None, context: bool) -> bytes:
    if scope not in SCOPES:
        raise ValueError(f"cache scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    kind = path_kind(request)
    doc: JsonDict = {
        "v": KEY_VERSION,
        "kind": kind,
        "model": canonical_model(str(request.get("model") or "")),
        "digest": model_digest,
        "tenant": tenant if scope == "tenant" else None,
        "context": context,
        "body": {k: v for k, v in request.items() if k not in NOT_IN_KEY and v is not None},
        "options": {},
    }
    options = request.get("options")
    if isinstance(options, dict):
        doc["options"] = {k: _number(v) for k, v in options.items() if k not in RUNTIME_OPTIONS and v is not None}
    if request.get("images"):
        doc["images"] = _image_hashes(request["images"])
    messages = request.get("messages")
    if isinstance(messages, list):
        last = _last_user(messages) if context else None
        canon = []
        for i, message in enumerate(messages):
            if isinstance(message, dict):
                images = message.get("images")
                message = {k: v for k, v in message.items() if k != "images" and v is not None}
                if images:
                    message["images"] = _image_hashes(images)
                if i == last:
                    message["content"] = None
            canon.append(message)
        doc["messages"] = canon
    elif context:
        doc["body"].pop("prompt", None)
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def cache_key(request: JsonDict, *, tenant: str, scope: str, model_digest: str | None) -> str:
    """SHA-256 (hex) of what changes the answer to ``request`` (the module's docstring says what)."""
    return hashlib.sha256(_canonical(request, tenant, scope, model_digest, False)).hexdigest()


def context_key(request: JsonDict, *, tenant: str, scope: str, model_digest: str | None) -> str:
    """``cache_key`` without the last user message's text (the generate prompt): its semantic neighbourhood."""
    return hashlib.sha256(_canonical(request, tenant, scope, model_digest, True)).hexdigest()


def semantic_text(request: JsonDict) -> str | None:
    """The text compared semantically: the last user message's content (chat) or the prompt (generate)."""
    messages = request.get("messages")
    if isinstance(messages, list):
        last = _last_user(messages)
        content = messages[last].get("content") if last is not None else None
    else:
        content = request.get("prompt")
    return content if isinstance(content, str) and content.strip() else None


def message_count(request: JsonDict) -> int:
    messages = request.get("messages")
    return len(messages) if isinstance(messages, list) else 1
