"""What the pipeline knows about one request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shared_ollama.protocol.upstream_openai_pass import PassThrough
from shared_ollama.service.admission.scheduler import Priority
from shared_ollama.service.admission.tenants import Tenant
from shared_ollama.service.images.codec import ImageReport
from shared_ollama.service.observability.records import RequestRecord


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    surface: str
    """``service``, ``ollama`` or ``openai``: which protocol adapter the request came through."""
    tenant: Tenant
    priority: Priority = Priority.INTERACTIVE
    headers: dict[str, str] = field(default_factory=dict)
    """Headers the pipeline adds to the response (rate-limit state, queue wait); the adapter sends them."""
    record: RequestRecord = field(
        default_factory=lambda: RequestRecord(ts=time.time(), request_id="", surface="", route="")
    )
    """The request's accounting record; the pipeline fills in tenant, model, wait, tokens and timings."""
    cache_header: str | None = None
    """The ``X-Shared-Ollama-Cache`` header: ``off``, ``exact`` or ``semantic``."""
    engine_host: str | None = None
    """The ``X-Shared-Ollama-Engine-Host`` header: the engine host the request must run on (None: any)."""
    passthrough: PassThrough | None = None
    """An OpenAI chat completion's place for an ``openai`` host's own answer (``protocol/upstream_openai_pass``)."""
    images: list[ImageReport] = field(default_factory=list)
    """What the image pipeline did to this request's images."""
    started: float = field(default_factory=time.perf_counter)
    """``time.perf_counter()`` at arrival (time to first token is measured from it)."""
