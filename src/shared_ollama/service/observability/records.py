"""One finished request, as accounting sees it: what metrics, performance stats and analytics record."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    """Filled in while a request runs; recorded once when its response has been sent (or failed)."""

    ts: float
    """Wall-clock time the request arrived (seconds since the epoch)."""
    request_id: str
    surface: str
    """``service``, ``ollama``, ``openai`` or ``operations``."""
    route: str
    """The route template, e.g. ``/api/chat`` (never a raw path with user data in it)."""
    tenant: str = ""
    user: str | None = None
    """The end user inside the tenant, when the request names one (header or body); fairness shares by it."""
    model: str = ""
    status: int = 0
    code: str = "ok"
    """``ok`` or the error code (``tenant_busy``, ``model_not_found``, ...)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_wait: float = 0.0
    """Seconds spent waiting for an engine slot."""
    ttft: float | None = None
    """Seconds from arrival to the first streamed token (streams only)."""
    latency: float = 0.0
    """Seconds from arrival to the last byte sent."""
    eval_seconds: float = 0.0
    """The engine's own generation time (``eval_duration``), for tokens/s."""
    load_seconds: float = 0.0
    """Model load time the request paid (``load_duration``)."""
    engine_seconds: float = 0.0
    """The engine's own time for the request (``total_duration``: load, prompt and generation), for usage."""
    cache: str = "none"
    """``none`` (not eligible or off), ``miss``, ``hit`` or ``semantic-hit``."""
    stream: bool = False
    engine: bool = False
    """Whether the request ran on the engine (False for rejections and cache hits)."""
    host: str = ""
    """The engine host that answered (``local`` with one engine; a retried request's last host; "" for none)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
