"""The scheduler's bounds: the queue limit and its Retry-After, and requests that wait past their deadline."""

from __future__ import annotations

import asyncio

import pytest

from shared_ollama.errors import QueueFull, RequestTimeout
from shared_ollama.service.admission.scheduler import Ticket
from tests.support.scheduler import BATCH, LONG_WAIT, Driver, make, settle

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
