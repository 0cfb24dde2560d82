"""The scheduler: engine slots and the one fair, bounded queue in front of them.

Driven directly with a fake clock (for ages and durations) and no real sleeps: requests wait in tasks, the test
releases slots one by one and records the order in which the waiting tasks are granted theirs.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable

import pytest

from shared_ollama.errors import QueueFull, RequestTimeout
from shared_ollama.service.scheduler import Priority, Scheduler, Ticket

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
    ) -> Ticket:
        ticket = Ticket(tenant=tenant, model=model, priority=priority, kind=kind)
        self.labels[ticket] = label
        self.tasks[ticket] = asyncio.create_task(self._wait(ticket, max_wait))
        return ticket

    async def queue(self, label: str, tenant: str = "t", model: str = "m", priority: Priority = INTERACTIVE) -> Ticket:
        """A request that must wait: submitted, then seen in the queue."""
        before = self.sched.queued
        ticket = self.submit(label, tenant, model, priority)
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


# ---------------------------------------------------------------------------------------------- fast path


async def test_free_slots_start_at_once_and_counters_follow() -> None:
    sched, clock = make(slots=2)
    d = Driver(sched)
    a = await d.start("a", tenant="x")
    assert (sched.running, sched.queued) == (1, 0)
    assert a.started_at == clock.now == a.enqueued_at
    assert a.waited == 0
    assert a.granted is None, "the fast path creates no future"
    b = await d.start("b", tenant="y", model="other")
    assert (sched.running, sched.queued) == (2, 0)
    assert sched._models == {"m": 1, "other": 1}

    c = await d.queue("c", tenant="z")
    assert (sched.running, sched.queued) == (2, 1)
    assert not d.tasks[c].done()

    clock.advance(4.0)
    assert await d.release(a) is c
    assert (sched.running, sched.queued) == (2, 0)
    assert c.waited == pytest.approx(4.0)
    assert sched.service_times.median() == pytest.approx(4.0)
    assert await d.release(b) is None
    assert await d.release(c) is None
    assert (sched.running, sched.queued) == (0, 0)
    assert sched._models == {}


async def test_after_a_release_a_new_request_takes_the_free_slot_at_once() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    a = await d.start("a")
    sched.release(a)
    assert sched.running == 0
    b = await d.start("b")
    assert sched.running == 1
    assert b.started_at is not None


# ---------------------------------------------------------------------------------------------- order


async def test_round_robin_across_tenants() -> None:
    sched, clock = make(slots=1)
    d = Driver(sched)
    blocker = await d.start("blocker", tenant="z")
    for label in labels("A", 10):
        clock.advance(0.1)  # distinct arrival times: arrival order alone would serve every A first
        await d.queue(label, tenant="A")
    for label in labels("B", 3):
        clock.advance(0.1)
        await d.queue(label, tenant="B")
    assert sched.queued == 13

    order = await d.drain(blocker)
    assert [label[0] for label in order] == list("ABABAB") + ["A"] * 7
    assert order == ["A0", "B0", "A1", "B1", "A2", "B2", *labels("A", 10)[3:]]


async def test_round_robin_three_tenants_and_a_tenant_that_comes_back_goes_last() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    blocker = await d.start("blocker")
    for label in labels("A", 3):
        await d.queue(label, tenant="A")
    await d.queue("B0", tenant="B")
    await d.queue("C0", tenant="C")

    first = await d.release(blocker)
    assert first is not None and d.labels[first] == "A0"
    second = await d.release(first)
    assert second is not None and d.labels[second] == "B0"
    # B's queue emptied; a new B request joins the round after A and C.
    await d.queue("B1", tenant="B")
    order = await d.drain(second)
    assert order == ["C0", "A1", "B1", "A2"]


async def test_fifo_inside_a_tenant() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    blocker = await d.start("blocker")
    for label in labels("A", 6):
        await d.queue(label, tenant="A")
    assert await d.drain(blocker) == labels("A", 6)


async def test_several_slots_fill_in_fair_order() -> None:
    sched, _ = make(slots=3)
    d = Driver(sched)
    running = [await d.start(f"r{i}") for i in range(3)]
    for label in labels("A", 4):
        await d.queue(label, tenant="A")
    for label in labels("B", 2):
        await d.queue(label, tenant="B")
    for ticket in running:
        sched.release(ticket)
    await settle()
    assert d.order == ["A0", "B0", "A1"]
    assert (sched.running, sched.queued) == (3, 3)


async def test_interactive_before_batch() -> None:
    sched, _ = make(slots=1, batch_aging=60.0)
    d = Driver(sched)
    blocker = await d.start("blocker")
    await d.queue("b0", tenant="X", priority=BATCH)  # older, yet batch
    await d.queue("b1", tenant="X", priority=BATCH)
    await d.queue("i0", tenant="Y")
    await d.queue("j0", tenant="Z")
    await d.queue("i1", tenant="Y")
    assert await d.drain(blocker) == ["i0", "j0", "i1", "b0", "b1"]


async def test_batch_alone_is_round_robin_across_tenants() -> None:
    sched, clock = make(slots=1)
    d = Driver(sched)
    blocker = await d.start("blocker")
    for label in labels("X", 3):
        clock.advance(0.1)
        await d.queue(label, tenant="X", priority=BATCH)
    clock.advance(0.1)
    await d.queue("Y0", tenant="Y", priority=BATCH)
    assert await d.drain(blocker) == ["X0", "Y0", "X1", "X2"]


async def test_aged_batch_alternates_with_interactive_instead_of_starving() -> None:
    sched, clock = make(slots=1, batch_aging=10.0)
    d = Driver(sched)
    blocker = await d.start("blocker")
    await d.queue("b0", tenant="X", priority=BATCH)
    await d.queue("b1", tenant="X", priority=BATCH)
    for label in labels("i", 4):
        await d.queue(label, tenant="Y")

    first = await d.release(blocker)
    assert first is not None and d.labels[first] == "i0", "batch work has not waited batch_aging yet"
    clock.advance(10.0)
    order = await d.drain(first)
    assert order == ["b0", "i1", "b1", "i2", "i3"]


async def test_batch_just_short_of_aging_still_waits_for_interactive() -> None:
    sched, clock = make(slots=1, batch_aging=10.0)
    d = Driver(sched)
    blocker = await d.start("blocker")
    await d.queue("b0", tenant="X", priority=BATCH)
    for label in labels("i", 3):
        await d.queue(label, tenant="Y")
    clock.advance(9.9)
    assert await d.drain(blocker) == ["i0", "i1", "i2", "b0"]


# (scheduler.py, Scheduler._candidates, the ``sorted(aged, key=lambda t: t.enqueued_at)`` branch): when
# interactive work is waiting, aged batch requests are chosen strictly by arrival time across all tenants, not
# round-robin (rule 2 of the module docstring: "every tenant with waiting requests gets its turn, however many it
# queued"). A tenant that queued many batch requests a moment earlier takes every batch turn before another
# tenant's aged batch request gets one; with no interactive work waiting, the same requests are round-robin.
async def test_aged_batch_turns_are_round_robin_across_tenants() -> None:
    sched, clock = make(slots=1, batch_aging=10.0)
    d = Driver(sched)
    blocker = await d.start("blocker")
    for label in labels("X", 3):
        await d.queue(label, tenant="X", priority=BATCH)
    clock.advance(1.0)
    await d.queue("Y0", tenant="Y", priority=BATCH)
    for label in labels("i", 5):
        await d.queue(label, tenant="I")
    clock.advance(100.0)  # every batch request has aged
    order = await d.drain(blocker)
    batch_order = [label for label in order if not label.startswith("i")]
    assert batch_order == ["X0", "Y0", "X1", "X2"]


# ---------------------------------------------------------------------------------------------- model warmth


async def test_warm_model_is_preferred_over_older_cold_requests() -> None:
    sched, _ = make(slots=1, model_capacity=1, model_aging=15.0, warm=lambda: {"hot"})
    d = Driver(sched)
    blocker = await d.start("blocker", model="hot")
    await d.queue("A-cold1", tenant="A", model="cold1")
    await d.queue("B-cold2", tenant="B", model="cold2")
    await d.queue("C-hot", tenant="C", model="hot")
    assert await d.drain(blocker) == ["C-hot", "A-cold1", "B-cold2"]


async def test_a_tenants_warm_request_overtakes_its_own_older_cold_one() -> None:
    sched, _ = make(slots=1, model_capacity=1, warm=lambda: {"hot"})
    d = Driver(sched)
    blocker = await d.start("blocker", model="other")
    await d.queue("A-cold", tenant="A", model="cold")
    await d.queue("A-hot", tenant="A", model="hot")
    assert await d.drain(blocker) == ["A-hot", "A-cold"]


@pytest.mark.parametrize(("waited", "expected"), [(15.0, ["A-cold", "B-hot"]), (14.9, ["B-hot", "A-cold"])])
async def test_cold_request_that_waited_model_aging_goes_first(waited: float, expected: list[str]) -> None:
    sched, clock = make(slots=1, model_capacity=1, model_aging=15.0, warm=lambda: {"hot"})
    d = Driver(sched)
    blocker = await d.start("blocker", model="hot")
    await d.queue("A-cold", tenant="A", model="cold")
    clock.advance(waited)
    await d.queue("B-hot", tenant="B", model="hot")
    assert await d.drain(blocker) == expected


@pytest.mark.parametrize(("capacity", "expected"), [(1, ["B-m2", "A-m1"]), (2, ["A-m1", "B-m2"])])
async def test_warmth_only_matters_when_the_requested_models_do_not_all_fit(capacity: int, expected: list[str]) -> None:
    sched, _ = make(slots=1, model_capacity=capacity, warm=lambda: {"m2"})
    d = Driver(sched)
    blocker = await d.start("blocker", model="m1")
    await d.queue("A-m1", tenant="A", model="m1")
    await d.queue("B-m2", tenant="B", model="m2")
    assert await d.drain(blocker) == expected


async def test_all_models_fit_plain_round_robin_even_with_a_warm_model() -> None:
    sched, _ = make(slots=1, model_capacity=3, warm=lambda: {"c"})
    d = Driver(sched)
    blocker = await d.start("blocker", model="a")
    await d.queue("A-a", tenant="A", model="a")
    await d.queue("B-b", tenant="B", model="b")
    await d.queue("C-c", tenant="C", model="c")
    assert await d.drain(blocker) == ["A-a", "B-b", "C-c"]


async def test_default_warm_models_are_the_most_recently_started() -> None:
    sched, _ = make(slots=1, model_capacity=1)  # no warm_models injected
    d = Driver(sched)
    blocker = await d.start("blocker", model="x")
    await d.queue("A-y", tenant="A", model="y")
    await d.queue("B-x", tenant="B", model="x")
    assert sched._recently_used() == ["x"]
    assert await d.drain(blocker) == ["B-x", "A-y"]


async def test_recent_models_are_bounded() -> None:
    sched, _ = make(slots=1, model_capacity=2)
    d = Driver(sched)
    for i in range(20):
        sched.release(await d.start(f"r{i}", model=f"m{i}"))
    assert len(sched._recent) <= 4 * 2
    assert list(sched._recently_used()) == ["m18", "m19"]


# ---------------------------------------------------------------------------------------------- queue bound


async def test_queue_full_when_max_queue_entries_wait() -> None:
    sched, _ = make(slots=1, max_queue=2)
    d = Driver(sched)
    blocker = await d.start("blocker")
    await d.queue("q0", tenant="A")
    await d.queue("q1", tenant="B")
    with pytest.raises(QueueFull) as info:
        await sched.acquire(Ticket(tenant="C", model="new"), LONG_WAIT)
    assert info.value.retry_after is not None and info.value.retry_after > 0
    assert info.value.status == 503 and info.value.code == "queue_full"
    assert sched.queued == 2
    assert sched.running == 1
    assert "new" not in sched._models, "a refused request must not count as a requested model"
    assert sched.queued_by() == {("A", "text", "interactive"): 1, ("B", "text", "interactive"): 1}

    # Once a place frees, a new request may queue again.
    await d.release(blocker)
    assert sched.queued == 1
    await d.queue("q2", tenant="C")
    assert sched.queued == 2


async def test_queue_full_retry_after_grows_with_service_time() -> None:
    sched, clock = make(slots=1, max_queue=1)
    d = Driver(sched)
    first = await d.start("first")
    clock.advance(8.0)
    sched.release(first)  # a service time of 8 s
    await d.start("blocker")
    await d.queue("q0")
    with pytest.raises(QueueFull) as info:
        await sched.acquire(Ticket(tenant="x", model="m"), LONG_WAIT)
    assert info.value.retry_after == pytest.approx(8.0 * (1 / 1 + 1))


async def test_max_queue_zero_rejects_whenever_every_slot_is_busy() -> None:
    sched, _ = make(slots=2, max_queue=0)
    d = Driver(sched)
    a = await d.start("a")
    await d.start("b")
    with pytest.raises(QueueFull):
        await sched.acquire(Ticket(tenant="t", model="m"), LONG_WAIT)
    assert (sched.running, sched.queued) == (2, 0)
    sched.release(a)
    c = await d.start("c")  # a free slot: no queue needed
    assert c.started_at is not None
    assert (sched.running, sched.queued) == (2, 0)


async def test_check_room() -> None:
    sched, _ = make(slots=1, max_queue=1)
    d = Driver(sched)
    sched.check_room()  # a free slot
    await d.start("a")
    sched.check_room()  # the queue has room
    await d.queue("q")
    with pytest.raises(QueueFull):
        sched.check_room()

    zero, _ = make(slots=1, max_queue=0)
    zero.check_room()
    await Driver(zero).start("a")
    with pytest.raises(QueueFull):
        zero.check_room()


# ---------------------------------------------------------------------------------------------- timeouts


async def test_timeout_leaves_the_queue_and_later_releases_still_dispatch() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    blocker = await d.start("blocker", model="b")
    late = d.submit("late", tenant="A", model="late", max_wait=0.01)
    with pytest.raises(RequestTimeout) as info:
        await asyncio.wait_for(d.tasks[late], 10)
    assert info.value.retry_after is not None and info.value.retry_after > 0
    assert info.value.code == "request_timeout"
    assert (sched.running, sched.queued) == (1, 0)
    assert sched.queued_by() == {}
    assert sched._models == {"b": 1}

    nxt = await d.queue("next", tenant="B")
    assert await d.release(blocker) is nxt
    assert late not in d.granted
    assert late.started_at is None
    assert (sched.running, sched.queued) == (1, 0)
    assert await d.release(nxt) is None
    assert (sched.running, sched.queued) == (0, 0)
    assert sched._models == {}


async def test_timeout_racing_with_a_grant_hands_the_slot_on() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    blocker = await d.start("blocker")
    # The racer (interactive) is chosen before ``nxt`` (batch). With max_wait=0 its timeout is due on the next
    # loop iteration, which this test lets come only after it granted the racer the slot.
    nxt = d.submit("next", tenant="B", priority=BATCH)
    racer = d.submit("racer", tenant="A", max_wait=0)
    await asyncio.sleep(0)
    assert sched.queued == 2
    sched.release(blocker)
    await settle()
    with pytest.raises(RequestTimeout):
        await d.tasks[racer]
    assert racer.started_at is not None, "the racer was granted the slot before its timeout struck"
    assert racer not in sched._running
    assert d.granted == [nxt]
    assert (sched.running, sched.queued) == (1, 0)
    sched.release(nxt)
    assert (sched.running, sched.queued) == (0, 0)
    assert sched._models == {}


# ---------------------------------------------------------------------------------------------- cancellation


async def test_cancel_while_queued_frees_the_place() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    blocker = await d.start("blocker", model="b")
    waiter = await d.queue("w", model="w")
    assert sched._models == {"b": 1, "w": 1}
    d.tasks[waiter].cancel()
    await settle()
    assert d.tasks[waiter].cancelled()
    assert (sched.running, sched.queued) == (1, 0)
    assert sched._models == {"b": 1}
    assert await d.release(blocker) is None
    assert (sched.running, sched.queued) == (0, 0), "no slot leaked to the cancelled request"
    assert sched._models == {}
    await d.start("again")
    assert sched.running == 1


async def test_cancel_in_the_middle_of_a_tenants_queue_keeps_the_rest_in_order() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    blocker = await d.start("blocker")
    tickets = [await d.queue(label, tenant="A") for label in labels("A", 4)]
    await d.queue("B0", tenant="B")
    d.tasks[tickets[1]].cancel()
    await settle()
    assert sched.queued == 4
    assert await d.drain(blocker) == ["A0", "B0", "A2", "A3"]


async def test_cancelled_waiter_not_yet_cleaned_up_is_skipped_by_dispatch() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    blocker = await d.start("blocker", model="b")
    first = await d.queue("first", tenant="A", model="x")
    second = await d.queue("second", tenant="B", model="y")
    d.tasks[first].cancel()
    sched.release(blocker)  # before the cancelled task ran its clean-up
    await settle()
    assert d.tasks[first].cancelled()
    assert d.granted == [second]
    assert (sched.running, sched.queued) == (1, 0)
    assert sched._models == {"y": 1}
    sched.release(second)
    assert (sched.running, sched.queued) == (0, 0)
    assert sched._models == {}


async def test_cancel_racing_with_a_grant_passes_the_slot_to_the_next_waiter() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    blocker = await d.start("blocker", model="b")
    first = await d.queue("first", tenant="A", model="x")
    second = await d.queue("second", tenant="B", model="y")
    sched.release(blocker)
    assert first in sched._running, "release granted the slot to the first waiter"
    d.tasks[first].cancel()  # before the waiter ran
    await settle()
    assert d.tasks[first].cancelled()
    assert first not in sched._running
    assert d.granted == [second]
    assert (sched.running, sched.queued) == (1, 0)
    assert sched._models == {"y": 1}
    sched.release(second)
    assert (sched.running, sched.queued) == (0, 0)
    assert sched._models == {}


async def test_cancel_racing_with_a_grant_and_nobody_else_waiting_frees_the_slot() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    blocker = await d.start("blocker", model="b")
    only = await d.queue("only", model="x")
    sched.release(blocker)
    assert only in sched._running
    d.tasks[only].cancel()
    await settle()
    assert d.tasks[only].cancelled()
    assert (sched.running, sched.queued) == (0, 0)
    assert sched._models == {}
    await d.start("again")
    assert sched.running == 1


# ---------------------------------------------------------------------------------------------- release


async def test_release_twice_is_a_no_op() -> None:
    sched, clock = make(slots=1)
    d = Driver(sched)
    a = await d.start("a", model="x")
    b = await d.queue("b", model="y")
    c = await d.queue("c", model="y")
    clock.advance(2.0)
    assert await d.release(a) is b
    assert len(sched.service_times) == 1
    assert await d.release(a) is None, "a second release must not start another request"
    assert (sched.running, sched.queued) == (1, 1)
    assert len(sched.service_times) == 1
    assert sched._models == {"y": 2}
    sched.release(Ticket(tenant="t", model="y"))  # never acquired
    assert (sched.running, sched.queued) == (1, 1)
    assert sched._models == {"y": 2}
    assert await d.release(b) is c


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
    for task in tasks.values():
        if not task.done():
            task.cancel()
    await settle()
    for ticket in list(held):
        held.discard(ticket)
        sched.release(ticket)
    await settle()

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
