"""Where a request runs: the engine hosts behind the scheduler's one fair queue, and the choice among them.

A ``Host`` is what the scheduler knows of one engine host: its ``name``, how many requests it takes at once
(``slots``) and three questions asked at every decision — does it serve a model, is the model loaded there
(warm), is the host up. The fleet's monitor backs them; this module only counts slots and chooses.

``Placement`` keeps the slots in use per host and chooses, for the waiting requests in the scheduler's fair order
(class, tenant round-robin, end users), the first one that a free host can take, and the host:

1. only hosts that are available, have a free slot and serve the request's model;
2. among them a host where the model is warm, else the least-loaded one (slots in use / slots; ties: the
   higher ``weight``, then the order the hosts were given in);
3. a request whose model is warm on a host that is busy waits for that host rather than loading the model on a
   free cold one — while the requests waiting for that model fit in the warm hosts' slots (a backlog beyond
   them is spread to another host, which so becomes warm too: a busy model scales out), and at most
   ``model_aging`` seconds from its arrival; then it takes any free host serving its model (affinity never
   starves a request). With ``model_aging <= 0`` no request waits for a warm host:
   the first request in fair order takes the best free host serving its model.

A request that cannot be placed now is passed over for the next one in fair order; it keeps its place. With no
hosts given, the scheduler has one implicit host (``LOCAL_HOST``) that serves every model and is always up:
today's single-engine behaviour. Synchronous bookkeeping only; the clock is the scheduler's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared_ollama.errors import BackendUnavailable, ModelNotFound

if TYPE_CHECKING:
    from shared_ollama.service.admission.ticket import Ticket

LOCAL_HOST = "local"
"""The name of the implicit host of a scheduler given no hosts (``Ticket.host`` of its requests)."""


def _every_model(model: str) -> bool:
    return True


def _no_model(model: str) -> bool:
    return False


def _always() -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Host:
    """One engine host as the scheduler sees it. The callables are asked at every decision, so they must be
    cheap and synchronous (the fleet monitor's last answer, not a request to the host)."""

    name: str
    slots: int
    serves: Callable[[str], bool] = field(default=_every_model)
    """Whether the host serves this model at all (its configured or listed models)."""
    is_warm: Callable[[str], bool] = field(default=_no_model)
    """Whether the model is loaded on the host now (its ``/api/ps``)."""
    available: Callable[[], bool] = field(default=_always)
    """Whether the host takes new requests (up, circuit closed)."""
    weight: float = 1.0
    """Breaks ties between equally loaded hosts: the higher weight first."""


class Placement:
    """Slots in use per host and the choice of (request, host) when one frees."""

    def __init__(self, hosts: Sequence[Host]) -> None:
        names = [h.name for h in hosts]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"engine hosts need unique names: {names}")
        self.hosts: tuple[Host, ...] = tuple(hosts)
        self._in_use: dict[str, int] = dict.fromkeys(names, 0)

    # ------------------------------------------------------------------ counts

    @property
    def slots(self) -> int:
        """Every host's slots together."""
        return sum(h.slots for h in self.hosts)

    def running_on(self, host: str) -> int:
        """Requests running on ``host`` (0 for a name that is not a host)."""
        return self._in_use.get(host, 0)

    def take(self, host: Host) -> None:
        self._in_use[host.name] += 1

    def give_back(self, host: str | None) -> None:
        if host in self._in_use and self._in_use[host] > 0:
            self._in_use[host] -= 1

    # ------------------------------------------------------------------ choice

    def check_served(self, model: str, pin: str | None = None, avoid: str | None = None) -> None:
        """Raise at once for a model no host could run: ``ModelNotFound`` when no host (or not the ``pin``ned one)
        serves it at all, ``BackendUnavailable`` (with Retry-After) when every host that serves it is down (or is
        the one to ``avoid``: a request's host that just failed it)."""
        serving = [h for h in self.hosts if h.serves(model) and (pin is None or h.name == pin)]
        if not serving:
            where = f"the engine host '{pin}'" if pin is not None else "any engine host"
            raise ModelNotFound(f"model '{model}' is not served by {where}")
        if not any(h.available() and h.name != avoid for h in serving):
            names = ", ".join(h.name for h in serving)
            raise BackendUnavailable(f"every engine host serving model '{model}' is unavailable ({names}); retry later")

    def host_for(self, ticket: Ticket, now: float, model_aging: float, backlog: int = 1) -> Host | None:
        """The host ``ticket`` should start on now, or None: no free host serves its model, or it waits for a
        busy host where its model is warm — while the ``backlog`` (requests waiting for its model) fits in the
        warm hosts' slots, and until it has waited ``model_aging`` seconds."""
        model = ticket.model
        up = [h for h in self.hosts if h.available() and h.serves(model) and (ticket.pin in (None, h.name))]
        if ticket.avoid is not None:
            up = [h for h in up if h.name != ticket.avoid]
        free = [h for h in up if self._in_use[h.name] < h.slots]
        if not free:
            return None
        warm_free = [h for h in free if h.is_warm(model)]
        if warm_free:
            return self._least_loaded(warm_free)
        warm_slots = sum(h.slots for h in up if h.is_warm(model))  # every warm host is busy
        if warm_slots and backlog <= warm_slots and now - ticket.enqueued_at < model_aging:
            return None
        return self._least_loaded(free)

    def choose(self, ordered: Iterable[Ticket], now: float, model_aging: float) -> tuple[Ticket, Host] | None:
        """The first request in ``ordered`` (the fair order) that a free host takes now, and that host."""
        if not self.any_free():
            return None
        waiting = list(ordered)
        backlog = Counter(t.model for t in waiting)
        for ticket in waiting:
            host = self.host_for(ticket, now, model_aging, backlog[ticket.model])
            if host is not None:
                return ticket, host
        return None

    def wake_at(self, waiting: Iterable[Ticket], now: float, model_aging: float) -> float | None:
        """The next moment after ``now`` at which one of ``waiting`` stops waiting for a warm host (its arrival +
        ``model_aging``), or None: what a timer should wake dispatch for, when no slot frees before."""
        if model_aging <= 0:
            return None
        due = [t.enqueued_at + model_aging for t in waiting]
        later = [at for at in due if at > now]
        return min(later) if later else None

    def any_free(self) -> bool:
        """Whether some available host has a free slot."""
        return any(h.available() and self._in_use[h.name] < h.slots for h in self.hosts)

    def _least_loaded(self, hosts: list[Host]) -> Host:
        order = {h.name: i for i, h in enumerate(self.hosts)}
        return min(hosts, key=lambda h: (self._in_use[h.name] / h.slots, -h.weight, order[h.name]))
