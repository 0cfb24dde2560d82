"""Engine slots and the one shared, bounded, fair queue in front of them.

At most ``slots`` requests run on the engine at once. Requests that find every slot taken wait in one queue
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

Everything here is synchronous bookkeeping on the event loop, so a decision costs microseconds and never
touches the engine. The clock is injectable for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import zip_longest

from shared_ollama.errors import QueueFull, RequestTimeout
from shared_ollama.service.admission.stats import RecentTimes


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
    enqueued_at: float = 0.0
    started_at: float | None = None
    granted: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def waited(self) -> float:
        return (self.started_at or self.enqueued_at) - self.enqueued_at


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slots = slots
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
            raise QueueFull(
                f"the queue is full ({self._queued} requests waiting for {self.slots} engine slots); retry later",
                retry_after=self.estimated_wait(),
            )

    async def acquire(self, ticket: Ticket, max_wait: float) -> None:
        """Wait for a slot (at most ``max_wait`` seconds). Leaving early, by error or cancellation, frees the place."""
        ticket.enqueued_at = self._clock()
        if self._queued == 0 and len(self._running) < self.slots:
            self._start(ticket)
            return
        self.check_room()
        ticket.granted = asyncio.get_running_loop().create_future()
        self._enqueue(ticket)
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

    def release(self, ticket: Ticket) -> None:
        """Give a running request's slot back and start the next waiting request(s)."""
        if ticket not in self._running:
            return
        self._running.discard(ticket)
        self._forget_model(ticket.model)
        if ticket.started_at is not None:
            self.service_times.add(self._clock() - ticket.started_at)
        self._dispatch()

    # ------------------------------------------------------------------ internals

    def _recently_used(self) -> Collection[str]:
        return list(self._recent)[-self.model_capacity :]

    def _start(self, ticket: Ticket) -> None:
        ticket.started_at = self._clock()
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

    def _enqueue(self, ticket: Ticket) -> None:
        self._queues[ticket.priority].setdefault(ticket.tenant, deque()).append(ticket)
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
        while self._queued and len(self._running) < self.slots:
            ticket = self._pick()
            tenants = self._queues[ticket.priority]
            tickets = tenants.pop(ticket.tenant)
            tickets.remove(ticket)
            if tickets:
                tenants[ticket.tenant] = tickets  # re-inserted last: the tenant's turn is over
            self._queued -= 1
            assert ticket.granted is not None
            if ticket.granted.done():  # its waiter was cancelled a moment ago and has not cleaned up yet
                self._forget_model(ticket.model)
                continue
            self._start(ticket)
            ticket.granted.set_result(None)

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
        if len(self._models) <= self.model_capacity:
            return candidates[0]  # every requested model fits: plain fairness
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
