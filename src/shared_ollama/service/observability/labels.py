"""The model and tenant a finished request is counted under, from bounded sets of names.

A request's model name is what the client sent (checked by nobody before the engine answers) and, with auth off,
its tenant is the project header's value: counted as they are, random names would grow ``/metrics``, the
performance window and the per-tenant counters without limit. So:

- a model gets a label of its own once the engine has answered a request for it (then it exists), up to
  ``max_models`` names; later ones are ``other``; a name the engine does not know (``model_not_found``) or that
  never reached it (refused before) is ``unknown``; no model at all is ``""``;
- a tenant gets a label of its own up to ``max_tenants`` names (the configured ones always have theirs); later
  ones are ``other``.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared_ollama.service.observability.records import RequestRecord

UNKNOWN = "unknown"
"""The model label of a name the engine has not answered for."""
OTHER = "other"
"""The label of the names past a bound."""


class BoundedNames:
    """The first ``limit`` names seen (and ``always``) are kept as they are; later ones become ``other``."""

    def __init__(self, limit: int, always: Iterable[str] = ()) -> None:
        self.limit = limit
        self._always = frozenset(always)
        self._seen: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self._always or name in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def keep(self, names: Iterable[str]) -> None:
        """Give ``names`` labels of their own from now on, like the ones given at the start."""
        self._always = self._always | frozenset(names)

    def label(self, name: str) -> str:
        if name in self._always or name in self._seen:
            return name
        if len(self._seen) < self.limit:
            self._seen.add(name)
            return name
        return OTHER


class RecordLabels:
    """A finished request's model and tenant labels (one instance per app: the sets are its memory)."""

    def __init__(self, *, max_models: int, max_tenants: int, tenants: Iterable[str] = ()) -> None:
        self._models = BoundedNames(max_models)
        self._tenants = BoundedNames(max_tenants, tenants)

    def model(self, rec: RequestRecord) -> str:
        if not rec.model:
            return ""
        if rec.model in self._models:
            return rec.model
        if rec.engine and rec.status < 400:  # the engine answered for this name: a model it knows
            return self._models.label(rec.model)
        return UNKNOWN

    def keep_tenants(self, names: Iterable[str]) -> None:
        """Tenants configured later (the admin API, a reload) get labels of their own too."""
        self._tenants.keep(names)

    def tenant(self, rec: RequestRecord) -> str:
        return self._tenants.label(rec.tenant) if rec.tenant else ""
