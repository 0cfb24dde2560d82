"""Which surface a request belongs to, decided in one place from its path.

The surface says which error format a request gets (OpenAI's nested ``{"error": {...}}`` or the native flat
body) and labels its accounting record. The middleware (the record), the error handlers (the error body) and
``deps.context_of`` (the pipeline's request context) all ask ``surface_of``; nothing else decides it.

- ``anthropic``: Anthropic's Messages API (``/v1/messages`` and below);
- ``openai``: the rest of OpenAI's API under ``/v1``, and the service API paths answered by OpenAI-format handlers
  (``/api/v1/chat/completions``, ``/api/v1/vlm/openai``, ``/api/v1/responses`` and below it);
- ``service``: the rest of the service API under ``/api/v1/``;
- ``ollama``: the rest of ``/api/`` (Ollama's API);
- ``operations``: everything else (``/``, ``/metrics``, ``/dashboard``, ...).

It runs on every request: plain string prefix checks, no regular expression.
"""

from __future__ import annotations

from typing import Literal

Surface = Literal["openai", "anthropic", "service", "ollama", "operations"]

OPENAI: Surface = "openai"
ANTHROPIC: Surface = "anthropic"
SERVICE: Surface = "service"
OLLAMA: Surface = "ollama"
OPERATIONS: Surface = "operations"

_OPENAI_FORMAT_SERVICE_PATHS = frozenset({"/api/v1/chat/completions", "/api/v1/vlm/openai", "/api/v1/responses"})


def surface_of(path: str) -> Surface:
    """The surface of a request for ``path`` (the ASGI scope's path)."""
    if path.startswith("/api/"):
        if path.startswith("/api/v1/"):
            if path in _OPENAI_FORMAT_SERVICE_PATHS or path.startswith("/api/v1/responses/"):
                return OPENAI
            return SERVICE
        return OLLAMA
    if path.startswith("/v1/") or path == "/v1":
        if path.startswith("/v1/messages") and (len(path) == 12 or path[12] == "/"):
            return ANTHROPIC
        return OPENAI
    return OPERATIONS
