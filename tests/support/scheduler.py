"""Driving the scheduler in unit tests: a fake clock, a factory and a driver of waiting requests.

The scheduler is driven directly with a fake clock (for ages and durations) and no real sleeps: requests wait in
tasks, the test releases slots one by one and records the order in which the waiting tasks are granted theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable

from shared_ollama.service.admission.scheduler import Priority, Scheduler, Ticket

INTERACTIVE = Priority.INTERACTIVE
BATCH = Priority.BATCH
LONG_WAIT = 3600.0
"""A ``max_wait`` (real loop seconds) that never expires during a test."""


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(
    slots: int = 1,
    max_queue: int = 100,
    *,
    model_capacity: int = 10,
    model_aging: float = 15.0,
    batch_aging: float = 60.0,
    warm: Callable[[], Collection[str]] | None = None,
) -> tuple[Scheduler, FakeClock]:
    clock = FakeClock()
    sched = Scheduler(
        slots,
        max_queue,
        model_capacity=model_capacity,
        model_aging=model_aging,
        batch_aging=batch_aging,
        warm_models=warm,
        clock=clock,
    )
    return sched, clock


async def settle(rounds: int = 10) -> None:
    """Let every task that can run, run (a bounded number of loop iterations)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool], limit: int = 200) -> None:
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def wind_down(sched: Scheduler, tasks: Iterable[asyncio.Task[None]], held: set[Ticket]) -> None:
    """The end of a randomised run: cancel the requests still waiting, release the ones still running."""
    for task in tasks:
        if not task.done():
            task.cancel()
    await settle()
    for ticket in list(held):
        held.discard(ticket)
        sched.release(ticket)
    await settle()


class Driver:
    """Requests waiting in tasks; records the order in which they are granted a slot."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.labels: dict[Ticket, str] = {}
        self.tasks: dict[Ticket, asyncio.Task[None]] = {}
        self.granted: list[Ticket] = []

    @property
    def order(self) -> list[str]:
        return [self.labels[t] for t in self.granted]

    async def start(
        self, label: str, tenant: str = "t", model: str = "m", priority: Priority = INTERACTIVE, kind: str = "text"
    ) -> Ticket:
        """A request that finds a free slot (the fast path)."""
        ticket = Ticket(tenant=tenant, model=model, priority=priority, kind=kind)
        self.labels[ticket] = label
        await self.sched.acquire(ticket, LONG_WAIT)
        return ticket

    def submit(
        self,
        label: str,
        tenant: str = "t",
        model: str = "m",
        priority: Priority = INTERACTIVE,
        kind: str = "text",
        max_wait: float = LONG_WAIT,
        user: str | None = None,
    ) -> Ticket:
        ticket = Ticket(tenant=tenant, model=model, priority=priority, kind=kind, user=user)
        self.labels[ticket] = label
        self.tasks[ticket] = asyncio.create_task(self._wait(ticket, max_wait))
        return ticket

    async def queue(
        self,
        label: str,
        tenant: str = "t",
        model: str = "m",
        priority: Priority = INTERACTIVE,
        user: str | None = None,
    ) -> Ticket:
        """A request that must wait: submitted, then seen in the queue."""
        before = self.sched.queued
        ticket = self.submit(label, tenant, model, priority, user=user)
        await until(lambda: self.sched.queued == before + 1)
        return ticket

    async def _wait(self, ticket: Ticket, max_wait: float) -> None:
        await self.sched.acquire(ticket, max_wait)
        self.granted.append(ticket)

    async def release(self, ticket: Ticket) -> Ticket | None:
        """Release ``ticket`` and return the request that got the slot (None if nobody was waiting)."""
        count = len(self.granted)
        self.sched.release(ticket)
        await settle()
        assert len(self.granted) <= count + 1, "one released slot started more than one request"
        return self.granted[-1] if len(self.granted) > count else None

    async def drain(self, first: Ticket, between: Callable[[], None] | None = None) -> list[str]:
        """Release ``first``, then each request as it starts, until nobody waits; the labels in grant order."""
        start = len(self.granted)
        current: Ticket | None = first
        while current is not None:
            current = await self.release(current)
            if between is not None:
                between()
        assert self.sched.queued == 0
        assert self.sched.running == 0
        return self.order[start:]


def labels(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def interleaved(*groups: Iterable[str]) -> list[str]:
    out: list[str] = []
    iterators = [iter(g) for g in groups]
    while iterators:
        for it in list(iterators):
            item = next(it, None)
            if item is None:
                iterators.remove(it)
            else:
                out.append(item)
    return out
