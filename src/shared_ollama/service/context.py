"""What the pipeline knows about one request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    surface: str
    """``service``, ``ollama`` or ``openai``: which protocol adapter the request came through."""
