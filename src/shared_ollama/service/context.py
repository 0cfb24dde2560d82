"""What the pipeline knows about one request."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared_ollama.service.scheduler import Priority
from shared_ollama.service.tenants import Tenant


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    surface: str
    """``service``, ``ollama`` or ``openai``: which protocol adapter the request came through."""
    tenant: Tenant
    priority: Priority = Priority.INTERACTIVE
    headers: dict[str, str] = field(default_factory=dict)
    """Headers the pipeline adds to the response (rate-limit state, queue wait); the adapter sends them."""
