"""The scheduler's fast path and its order: round robin across tenants, FIFO inside one, interactive before batch.

Driven with a fake clock and no real sleeps (see ``tests/support/scheduler.py``).
"""

from __future__ import annotations

import pytest

from tests.support.scheduler import BATCH, Driver, labels, make, settle

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
