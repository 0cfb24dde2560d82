"""A request's place in the scheduler (``Ticket``) and its class (``Priority``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum


class Priority(StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


@dataclass(eq=False, slots=True)
class Ticket:
    """One request's place in the scheduler, from arrival until its slot is released."""

    tenant: str
    model: str
    priority: Priority = Priority.INTERACTIVE
    kind: str = "text"
    user: str | None = None
    """The end user inside the tenant, when the request names one (None: the tenant's anonymous user)."""
    pin: str | None = None
    """The one host the request may run on (``X-Shared-Ollama-Engine-Host``; None: any that serves its model)."""
    avoid: str | None = None
    """A host the request must not run on (the one that failed it before its first byte: ``Scheduler.move``)."""
    enqueued_at: float = 0.0
    started_at: float | None = None
    host: str | None = None
    """The engine host it started on (``LOCAL_HOST`` with a single implicit host); None until it starts."""
    granted: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def waited(self) -> float:
        return (self.started_at or self.enqueued_at) - self.enqueued_at
