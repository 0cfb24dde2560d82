"""Engine slots and the one shared, bounded, fair queue in front of them.

At most ``slots`` requests run on the engine at once (with several engine hosts: each host's ``slots``; see
below). Requests that find every slot taken wait in one queue
bounded by ``max_queue`` entries, kept as one FIFO sub-queue per tenant and priority class. When a slot
frees, the next request is chosen:

1. by class: interactive before batch, except that a batch request that waited ``batch_aging`` seconds
   competes as an equal (so batch work is slowed by interactive load, never starved);
2. across tenants, round-robin: every tenant with waiting requests gets its turn, however many it queued;
   inside a tenant, its turn goes round-robin among the end users its requests name (``Ticket.user``: a chat
   front end's users share one key), the least recently served user first, each user's requests in order;
3. by model warmth, only when the requested models do not all fit in the engine at once: among the tenants'
   requests in round-robin order, the first for a model that is already loaded wins, unless a request for a
   cold model has waited ``model_aging`` seconds (then it goes first: no request waits forever).
   ``model_aging <= 0`` means no model preference at all: plain fair order (1 and 2).

Several engine hosts (``hosts``, see ``placement.py``) share the one queue: when a slot frees anywhere, or a host
comes back (``poke``), the first request in the fair order of 1 and 2 that a free host can take starts there,
on a host where its model is warm, else the least-loaded host serving it; a request may wait up to
``model_aging`` seconds for a busy host where its model is warm. ``Ticket.host`` names the host it runs on;
``running_on`` counts per host. A model that no host serves is refused at once (``ModelNotFound``; every host
serving it down: ``BackendUnavailable``). With no hosts given there is one implicit host of ``slots`` slots that
serves every model, and the rules above are exactly those of a single engine.

Everything here is synchronous bookkeeping on the event loop, so a decision costs microseconds and never
touches the engine. The clock is injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Sequence
from itertools import zip_longest

from shared_ollama.errors import BackendUnavailable, ModelNotFound, QueueFull, RequestTimeout
from shared_ollama.service.admission.placement import LOCAL_HOST, Host, Placement
from shared_ollama.service.admission.stats import RecentTimes
from shared_ollama.service.admission.ticket import Priority, Ticket

__all__ = ["Priority", "Scheduler", "Ticket"]


class Scheduler:
    def __init__(
        self,
        slots: int,
        max_queue: int,
        *,
        model_capacity: int,
        model_aging: float,
        batch_aging: float,
        warm_models: Callable[[], Collection[str]] | None = None,
        hosts: Sequence[Host] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``slots`` is the implicit host's when ``hosts`` is empty or None; given hosts bring their own slots, and
        ``self.slots`` is then their sum. ``warm_models`` is the implicit host's loaded models (default: the most
        recently started ones)."""
        self._many = bool(hosts)
        self._local = Host(LOCAL_HOST, slots, is_warm=self._is_warm_locally)
        self._placement = Placement(hosts or [self._local])
        self.slots = self._placement.slots
        self.max_queue = max_queue
        self.model_capacity = model_capacity
        self.model_aging = model_aging
        self.batch_aging = batch_aging
        self._warm_models = warm_models or self._recently_used
        self._recent: OrderedDict[str, None] = OrderedDict()
        """Models by last start, most recent last: what an engine with LRU eviction most likely holds."""
        self._clock = clock
        self._queues: dict[Priority, OrderedDict[str, deque[Ticket]]] = {p: OrderedDict() for p in Priority}
        self._queued = 0
        self._running: set[Ticket] = set()
        self._batch_turn = False
        self._served: OrderedDict[tuple[str, str | None], int] = OrderedDict()
        """(tenant, user) -> sequence number of its last start, most recent last: whose turn it is in a tenant."""
        self._starts = 0
        self._models: dict[str, int] = {}
        """Requests queued or running per model (what the engine is asked to hold)."""
        self._timer: asyncio.TimerHandle | None = None
        """Wakes dispatch when a request stops waiting for a warm host (several hosts only)."""
        self.waits = RecentTimes()
        self.service_times = RecentTimes()

    # ------------------------------------------------------------------ state

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def running(self) -> int:
        return len(self._running)

    def queued_by(self) -> dict[tuple[str, str, str], int]:
        """Waiting requests per (tenant, kind, priority)."""
        out: dict[tuple[str, str, str], int] = {}
        for priority, tenants in self._queues.items():
            for tenant, tickets in tenants.items():
                for ticket in tickets:
                    key = (tenant, ticket.kind, priority.value)
                    out[key] = out.get(key, 0) + 1
        return out

    def running_by(self) -> dict[tuple[str, str, str], int]:
        """Running requests per (tenant, kind, priority)."""
        out: dict[tuple[str, str, str], int] = {}
        for ticket in self._running:
            key = (ticket.tenant, ticket.kind, ticket.priority.value)
            out[key] = out.get(key, 0) + 1
        return out

    @property
    def hosts(self) -> tuple[Host, ...]:
        """The engine hosts requests are placed on (the one implicit host when none were given)."""
        return self._placement.hosts

    def running_on(self, host: str) -> int:
        """Requests running on the host named ``host``."""
        return self._placement.running_on(host)

    def busy_models(self) -> list[str]:
        """Models with requests queued or running."""
        return list(self._models)

    def estimated_wait(self) -> float:
        """Seconds until a newly queued request would likely start: the queue ahead, drained by every slot."""
        per_request = self.service_times.median(default=1.0)
        return per_request * (self._queued / max(1, self.slots) + 1)

    # ------------------------------------------------------------------ acquire / release

    def check_room(self) -> None:
        """Raise ``queue_full`` if a request arriving now would find every slot taken and the queue full."""
        if self._queued >= self.max_queue and (self._queued or len(self._running) >= self.slots):
            raise self._queue_full()

    async def acquire(self, ticket: Ticket, max_wait: float) -> None:
        """Wait for a slot (at most ``max_wait`` seconds). Leaving early, by error or cancellation, frees the place.
        With several hosts, a model no host serves, or none that is up, is refused at once."""
        ticket.enqueued_at = self._clock()
        await self._wait(ticket, max_wait)

    async def move(self, ticket: Ticket, max_wait: float) -> None:
        """A running request whose host failed before its first byte (already taken out): its slot is given back
        and it waits at most ``max_wait`` for a slot on another host serving its model, first of its tenant's
        requests, its tenant's turn first, aged from its first arrival, never refused for a full queue — it keeps
        its place. Refused at once as in ``acquire`` when no other host could take it."""
        self.release(ticket, timed=False)
        ticket.avoid = ticket.host
        ticket.started_at, ticket.host, ticket.granted = None, None, None
        await self._wait(ticket, max_wait, moved=True)

    async def _wait(self, ticket: Ticket, max_wait: float, *, moved: bool = False) -> None:
        if self._many:
            self._placement.check_served(ticket.model, ticket.pin, ticket.avoid)
            self._dispatch()  # requests that aged since the last decision go before this one
            host = self._placement.host_for(ticket, ticket.enqueued_at, self.model_aging)
            if host is not None:
                self._start(ticket, host)
                return
            if self._queued >= self.max_queue and not moved:
                raise self._queue_full()
        elif self._queued == 0 and len(self._running) < self.slots:
            self._start(ticket, self._local)
            return
        if not moved:
            self.check_room()
        ticket.granted = asyncio.get_running_loop().create_future()
        self._enqueue(ticket, first=moved)
        if self._many:
            self._dispatch()  # one more waiting may make the backlog spill onto a cold host (placement.py)
            self._wake_for_aging()
        try:
            async with asyncio.timeout(max_wait):
                await ticket.granted
        except BaseException as exc:
            if ticket.granted.done() and not ticket.granted.cancelled():
                self.release(ticket)  # granted just as the wait ended: hand the slot on
            else:
                self._dequeue(ticket)
            if isinstance(exc, TimeoutError):
                raise RequestTimeout(
                    f"no engine slot became free within {max_wait:g} s ({self._queued} requests waiting)",
                    retry_after=self.estimated_wait(),
                ) from None
            raise

    def release(self, ticket: Ticket, *, timed: bool = True) -> None:
        """Give a running request's slot back and start the next waiting request(s); ``timed``: its time counts
        in the service times (not a failed attempt's)."""
        if ticket not in self._running:
            return
        self._running.discard(ticket)
        self._placement.give_back(ticket.host)
        self._forget_model(ticket.model)
        if ticket.started_at is not None and timed:
            self.service_times.add(self._clock() - ticket.started_at)
        self._dispatch()

    def poke(self) -> None:
        """Start what can start now, and refuse what never can: call when a host comes back or goes down, or its
        loaded models change. A waiting request that no host could take any more (every host serving its model
        is down) ends at once with ``BackendUnavailable`` rather than at its deadline."""
        if self._many:
            self._shed()
        self._dispatch()

    def _shed(self) -> None:
        for tenants in self._queues.values():
            for ticket in [t for tickets in tenants.values() for t in tickets]:
                try:
                    self._placement.check_served(ticket.model, ticket.pin)
                except (BackendUnavailable, ModelNotFound) as exc:
                    self._dequeue(ticket)
                    if ticket.granted is not None and not ticket.granted.done():
                        ticket.granted.set_exception(exc)

    # ------------------------------------------------------------------ internals

    def _queue_full(self) -> QueueFull:
        return QueueFull(
            f"the queue is full ({self._queued} requests waiting for {self.slots} engine slots); retry later",
            retry_after=self.estimated_wait(),
        )

    def _is_warm_locally(self, model: str) -> bool:
        return model in self._warm_models()

    def _recently_used(self) -> Collection[str]:
        return list(self._recent)[-self.model_capacity :]

    def _start(self, ticket: Ticket, host: Host) -> None:
        ticket.started_at = self._clock()
        ticket.host = host.name
        self._placement.take(host)
        self._recent.pop(ticket.model, None)
        self._recent[ticket.model] = None
        if len(self._recent) > 4 * self.model_capacity:
            self._recent.popitem(last=False)
        self._running.add(ticket)
        served = (ticket.tenant, ticket.user)
        self._served.pop(served, None)
        self._starts += 1
        self._served[served] = self._starts
        if len(self._served) > _SERVED_MEMORY:
            self._served.popitem(last=False)  # the longest-unserved user: forgetting it only moves it forward
        if ticket.granted is None:  # started without queueing
            self._models[ticket.model] = self._models.get(ticket.model, 0) + 1
        self.waits.add(ticket.waited)

    def _enqueue(self, ticket: Ticket, *, first: bool = False) -> None:
        tenants = self._queues[ticket.priority]
        tickets = tenants.setdefault(ticket.tenant, deque())
        if first:  # a moved request: its tenant's turn comes first
            tickets.appendleft(ticket)
            tenants.move_to_end(ticket.tenant, last=False)
        else:
            tickets.append(ticket)
        self._queued += 1
        self._models[ticket.model] = self._models.get(ticket.model, 0) + 1

    def _dequeue(self, ticket: Ticket) -> None:
        tenants = self._queues[ticket.priority]
        tickets = tenants.get(ticket.tenant)
        if tickets is None or ticket not in tickets:
            return
        tickets.remove(ticket)
        if not tickets:
            del tenants[ticket.tenant]
        self._queued -= 1
        self._forget_model(ticket.model)

    def _forget_model(self, model: str) -> None:
        left = self._models.get(model, 0) - 1
        if left > 0:
            self._models[model] = left
        else:
            self._models.pop(model, None)

    def _dispatch(self) -> None:
        if self._many:
            self._dispatch_hosts()
            return
        while self._queued and len(self._running) < self.slots:
            self._grant(self._pick(), self._local)

    def _dispatch_hosts(self) -> None:
        while self._queued and self._placement.any_free():
            now = self._clock()
            turn = self._batch_turn
            choice = self._placement.choose(self._fair_order(now), now, self.model_aging)
            if choice is None:
                self._batch_turn = turn  # nobody started: the class's turn is not used up
                break
            self._grant(*choice)
        self._wake_for_aging()

    def _grant(self, ticket: Ticket, host: Host) -> None:
        """Take ``ticket`` out of the queue and start it on ``host`` (unless its waiter is already gone)."""
        tenants = self._queues[ticket.priority]
        tickets = tenants.pop(ticket.tenant)
        tickets.remove(ticket)
        if tickets:
            tenants[ticket.tenant] = tickets  # re-inserted last: the tenant's turn is over
        self._queued -= 1
        assert ticket.granted is not None
        if ticket.granted.done():  # its waiter was cancelled a moment ago and has not cleaned up yet
            self._forget_model(ticket.model)
            return
        self._start(ticket, host)
        ticket.granted.set_result(None)

    def _wake_for_aging(self) -> None:
        """Arm one timer for the next moment a waiting request stops waiting for a warm host."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self._clock()
        waiting = (t for tenants in self._queues.values() for tickets in tenants.values() for t in tickets)
        at = self._placement.wake_at(waiting, now, self.model_aging)
        if at is not None:
            with contextlib.suppress(RuntimeError):  # no loop (a release outside one): the next event decides
                self._timer = asyncio.get_running_loop().call_later(at - now, self.poke)

    def _fair_order(self, now: float) -> list[Ticket]:
        """Every waiting request in fair order: the class whose turn it is first, then the rest (a request that no
        free host takes is passed over for the next)."""
        first = self._candidates(now)
        chosen = set(first)
        rest = [t for p in Priority for t in self._interleave(self._queues[p]) if t not in chosen]
        return first + rest

    def _candidates(self, now: float) -> list[Ticket]:
        """Waiting requests of the class whose turn it is: tenants' heads first, in round-robin order."""
        interactive = self._queues[Priority.INTERACTIVE]
        batch = self._queues[Priority.BATCH]
        if not interactive:
            return self._interleave(batch)
        aged: OrderedDict[str, deque[Ticket]] = OrderedDict()
        for tenant, tickets in batch.items():
            old = deque(t for t in tickets if now - t.enqueued_at >= self.batch_aging)
            if old:
                aged[tenant] = old
        if aged:
            self._batch_turn = not self._batch_turn
            if self._batch_turn:  # aged batch work alternates with interactive work, round-robin across tenants
                return self._interleave(aged)
        return self._interleave(interactive)

    def _pick(self) -> Ticket:
        now = self._clock()
        candidates = self._candidates(now)
        if self.model_aging <= 0 or len(self._models) <= self.model_capacity:
            return candidates[0]  # no model preference, or every requested model fits: plain fairness
        warm = set(self._warm_models())
        for ticket in candidates:  # a cold request that waited long enough goes first
            if ticket.model not in warm and now - ticket.enqueued_at >= self.model_aging:
                return ticket
        for ticket in candidates:
            if ticket.model in warm:
                return ticket
        return candidates[0]

    def _interleave(self, tenants: OrderedDict[str, deque[Ticket]]) -> list[Ticket]:
        """Every tenant's first request, then every tenant's second, ... (tenants in their round-robin order;
        each tenant's requests in its users' round-robin order)."""
        ordered = [self._by_user(tickets) for tickets in tenants.values()]
        return [t for rank in zip_longest(*ordered) for t in rank if t is not None]

    def _by_user(self, tickets: deque[Ticket]) -> Iterable[Ticket]:
        """A tenant's waiting requests, round-robin across its users: the least recently served user's first
        request, the next user's, ...; a tenant whose requests name no users (the common case) keeps its FIFO."""
        first = tickets[0].user
        if all(t.user == first for t in tickets):
            return tickets
        per_user: dict[str | None, list[Ticket]] = {}
        for ticket in tickets:
            per_user.setdefault(ticket.user, []).append(ticket)
        tenant = tickets[0].tenant
        users = sorted(per_user, key=lambda user: self._served.get((tenant, user), 0))  # never served: first
        return [t for turn in zip_longest(*(per_user[u] for u in users)) for t in turn if t is not None]


_SERVED_MEMORY = 4096
"""(tenant, user) pairs remembered for the users' round-robin."""
