"""The scheduler and requests that go away: cancellation while queued or racing a grant, and double releases."""

from __future__ import annotations

from shared_ollama.service.admission.scheduler import Ticket
from tests.support.scheduler import Driver, labels, make, settle

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
