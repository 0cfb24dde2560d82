"""The scheduler's books: state views, wait estimates, recorded times; random operations keep them balanced."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from shared_ollama.errors import QueueFull, RequestTimeout
from shared_ollama.service.admission.scheduler import Priority, Scheduler, Ticket
from tests.support.scheduler import BATCH, INTERACTIVE, LONG_WAIT, Driver, make, settle, until, wind_down

# ---------------------------------------------------------------------------------------------- state views


async def test_queued_by_and_running_by() -> None:
    sched, _ = make(slots=2)
    d = Driver(sched)
    await d.start("r1", tenant="a", kind="text")
    await d.start("r2", tenant="b", kind="vision", priority=BATCH)
    for label, tenant, kind, priority in [
        ("q1", "a", "text", INTERACTIVE),
        ("q2", "a", "text", INTERACTIVE),
        ("q3", "a", "vision", INTERACTIVE),
        ("q4", "a", "text", BATCH),
        ("q5", "c", "vision", BATCH),
    ]:
        d.submit(label, tenant=tenant, kind=kind, priority=priority)
    await until(lambda: sched.queued == 5)
    assert sched.running_by() == {("a", "text", "interactive"): 1, ("b", "vision", "batch"): 1}
    assert sched.queued_by() == {
        ("a", "text", "interactive"): 2,
        ("a", "vision", "interactive"): 1,
        ("a", "text", "batch"): 1,
        ("c", "vision", "batch"): 1,
    }


async def test_estimated_wait_grows_with_the_queue() -> None:
    sched, clock = make(slots=2)
    d = Driver(sched)
    assert sched.estimated_wait() == pytest.approx(1.0), "no service time yet: one second per request"
    running = [await d.start("r0"), await d.start("r1")]
    estimates = [sched.estimated_wait()]
    for i in range(4):
        await d.queue(f"q{i}", tenant=f"t{i}")
        estimates.append(sched.estimated_wait())
    assert estimates == sorted(estimates) and len(set(estimates)) == len(estimates)
    assert estimates[-1] == pytest.approx(1.0 * (4 / 2 + 1))

    clock.advance(6.0)
    await d.release(running[0])
    assert sched.queued == 3
    assert sched.estimated_wait() == pytest.approx(6.0 * (3 / 2 + 1))


async def test_waits_and_service_times_are_recorded() -> None:
    sched, clock = make(slots=1)
    d = Driver(sched)
    a = await d.start("a")
    b = await d.queue("b")
    clock.advance(3.0)
    await d.release(a)
    clock.advance(5.0)
    await d.release(b)
    assert sorted(sched.waits._values) == pytest.approx([0.0, 3.0])
    assert sorted(sched.service_times._values) == pytest.approx([3.0, 5.0])
    assert b.waited == pytest.approx(3.0)


# ---------------------------------------------------------------------------------------------- property


def _expected_models(sched: Scheduler) -> dict[str, int]:
    queued = [t for tenants in sched._queues.values() for q in tenants.values() for t in q]
    return dict(Counter(t.model for t in [*queued, *sched._running]))


async def test_randomized_operations_keep_the_books_balanced() -> None:
    rng = random.Random(1234)
    sched, clock = make(slots=3, max_queue=20, model_capacity=2, model_aging=5.0, batch_aging=8.0)
    tenants = [f"t{i}" for i in range(5)]
    models = ["m0", "m1", "m2"]
    held: set[Ticket] = set()
    """Granted (the waiting task saw it) and not yet released by the test."""
    released: list[Ticket] = []
    tasks: dict[Ticket, asyncio.Task[None]] = {}
    seen = Counter[str]()

    async def client(ticket: Ticket, max_wait: float) -> None:
        await sched.acquire(ticket, max_wait)
        held.add(ticket)

    def check_always() -> None:
        assert 0 <= sched.running <= sched.slots
        assert 0 <= sched.queued <= sched.max_queue
        assert sum(sched.queued_by().values()) == sched.queued
        assert sum(sched.running_by().values()) == sched.running
        assert held <= sched._running
        assert sched._models == _expected_models(sched)

    def check_settled() -> None:
        check_always()
        assert held == sched._running, "every running request is known to its waiter, none leaked"
        if sched.queued:
            assert sched.running == sched.slots, "a request waits while a slot is free"
        for ticket, task in tasks.items():
            if task.done() and ticket not in held:
                assert ticket not in sched._running

    for _ in range(500):
        clock.advance(rng.random() * 2)
        op = rng.random()
        if op < 0.55:
            ticket = Ticket(tenant=rng.choice(tenants), model=rng.choice(models), priority=rng.choice(list(Priority)))
            max_wait = 0.0 if rng.random() < 0.15 else LONG_WAIT
            tasks[ticket] = asyncio.create_task(client(ticket, max_wait))
        elif op < 0.64:
            waiting = [t for t, task in tasks.items() if not task.done()]
            racing = [t for t in waiting if t in sched._running]  # granted, their waiter has not run yet
            if racing and rng.random() < 0.7:
                waiting = racing
            if waiting:
                victim = rng.choice(waiting)
                if victim in sched._running:
                    seen["cancel racing a grant"] += 1
                tasks[victim].cancel()
        elif op < 0.92:
            if held:
                ticket = rng.choice(sorted(held, key=id))
                held.discard(ticket)
                sched.release(ticket)
                released.append(ticket)
        elif released:
            sched.release(rng.choice(released))  # a second release: no effect
        check_always()
        if rng.random() < 0.6:
            await settle(rng.randint(1, 3))
            check_always()
        if rng.random() < 0.2:
            await settle()
            check_settled()

    await settle()
    check_settled()
    await wind_down(sched, tasks.values(), held)

    for task in tasks.values():
        assert task.done()
        if task.cancelled():
            seen["cancelled"] += 1
        elif isinstance(task.exception(), QueueFull):
            seen["queue full"] += 1
        elif isinstance(task.exception(), RequestTimeout):
            seen["timeout"] += 1
        else:
            assert task.exception() is None, repr(task.exception())
            seen["granted"] += 1
    assert (sched.running, sched.queued) == (0, 0)
    assert sched._models == {}
    assert not any(sched._queues[p] for p in Priority)
    # The run exercised every path it claims to.
    for outcome in ("granted", "cancelled", "queue full", "timeout", "cancel racing a grant"):
        assert seen[outcome] > 0, (outcome, seen)
