"""Placement on several engine hosts behind the scheduler's one fair queue (``service/admission/placement.py``).

Hosts are fakes whose models, warm models and availability the test changes; the clock is fake and nothing
sleeps (see ``tests/support/scheduler.py``).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from shared_ollama.errors import BackendUnavailable, ModelNotFound, QueueFull, RequestTimeout
from shared_ollama.service.admission.placement import LOCAL_HOST, Host
from shared_ollama.service.admission.scheduler import Priority, Scheduler, Ticket
from tests.support.scheduler import LONG_WAIT, Driver, FakeClock, labels, make, settle, until, wind_down


@dataclass
class FakeHost:
    """A host whose answers the test controls."""

    name: str
    slots: int = 1
    models: set[str] = field(default_factory=lambda: {"m"})
    warm: set[str] = field(default_factory=set)
    up: bool = True
    weight: float = 1.0

    def host(self) -> Host:
        return Host(
            self.name,
            self.slots,
            serves=self.models.__contains__,
            is_warm=self.warm.__contains__,
            available=lambda: self.up,
            weight=self.weight,
        )


def fleet(
    *hosts: FakeHost, model_aging: float = 15.0, max_queue: int = 100, clock: FakeClock | None = None
) -> tuple[Scheduler, FakeClock]:
    clock = clock or FakeClock()
    sched = Scheduler(
        0,
        max_queue,
        model_capacity=10,
        model_aging=model_aging,
        batch_aging=60.0,
        hosts=[h.host() for h in hosts],
        clock=clock,
    )
    return sched, clock


# ---------------------------------------------------------------------------------------------- which hosts


async def test_requests_go_only_to_hosts_that_serve_their_model() -> None:
    sched, _ = fleet(FakeHost("a", slots=2, models={"m1"}), FakeHost("b", slots=2, models={"m2"}))
    d = Driver(sched)
    assert sched.slots == 4
    started = [await d.start(f"r{i}", model=model) for i, model in enumerate(["m1", "m2", "m1", "m2"])]
    assert [t.host for t in started] == ["a", "b", "a", "b"]
    sched.release(started[1])  # b has a free slot, but does not serve m1
    waiting = await d.queue("late", model="m1")
    assert waiting.started_at is None and sched.running_on("b") == 1
    assert await d.release(started[0]) is waiting
    assert waiting.host == "a"
    assert (sched.running_on("a"), sched.running_on("b")) == (2, 1)


async def test_a_host_where_the_model_is_warm_is_preferred() -> None:
    a, b = FakeHost("a", slots=2), FakeHost("b", slots=2, warm={"m"})
    sched, _ = fleet(a, b)
    d = Driver(sched)
    first = await d.start("first")
    assert first.host == "b", "b has the model loaded; a is listed first and as idle"
    second = await d.start("second")
    assert second.host == "b", "still warm and free, though more loaded than a"
    third = await d.queue("third")
    assert sched.running_on("a") == 0, "the warm host is full: the request waits for it rather than load on a"
    assert await d.release(first) is third
    assert third.host == "b"


async def test_the_least_loaded_host_is_chosen_among_cold_ones() -> None:
    sched, _ = fleet(FakeHost("a", slots=4), FakeHost("b", slots=2), FakeHost("c", slots=2, weight=2.0))
    d = Driver(sched)
    hosts = [(await d.start(f"r{i}")).host for i in range(8)]
    # In use / slots: a, b, c all 0 -> c (higher weight); then a and b 0 -> a (listed first); then b 0 -> b;
    # then a 1/4 < 1/2 -> a; then a 2/4 ties b and c at 1/2 -> c (weight); then a (listed before b); ...
    assert hosts == ["c", "a", "b", "a", "c", "a", "b", "a"]
    assert [sched.running_on(h) for h in ("a", "b", "c")] == [4, 2, 2]


# ---------------------------------------------------------------------------------------------- affinity


@pytest.mark.parametrize(("waited", "host"), [(14.9, None), (15.0, "b")])
async def test_a_request_waits_for_a_busy_warm_host_at_most_model_aging(waited: float, host: str | None) -> None:
    sched, clock = fleet(FakeHost("a", warm={"m"}), FakeHost("b"), model_aging=15.0)
    d = Driver(sched)
    blocker = await d.start("blocker")
    assert blocker.host == "a"
    waiting = await d.queue("waiting")
    assert sched.running_on("b") == 0, "b is free but cold: the request waits for a"
    clock.advance(waited)
    sched.poke()
    await settle()
    assert waiting.host == host
    if host is None:  # still waiting: a's next free slot is its
        assert await d.release(blocker) is waiting
        assert waiting.host == "a"


async def test_a_backlog_beyond_the_warm_hosts_slots_spreads_to_a_cold_host_at_once() -> None:
    sched, _ = fleet(FakeHost("a", warm={"m"}), FakeHost("b"), model_aging=15.0)
    d = Driver(sched)
    await d.start("blocker")  # a's one slot
    first = await d.queue("first")
    assert first.host is None, "one waiting request fits in a's slot: it waits for the warm host"
    second = d.submit("second")
    await settle()
    assert first.host == "b" and second.host is None, "two do not fit: the oldest goes to b now, in fair order"
    assert sched.queued == 1


async def test_a_waiting_request_takes_a_cold_host_when_it_ages_without_a_poke() -> None:
    # The real clock: a timer wakes dispatch when the request has waited model_aging (50 ms).
    a, b = FakeHost("a", warm={"m"}), FakeHost("b")
    sched = Scheduler(0, 10, model_capacity=1, model_aging=0.05, batch_aging=60.0, hosts=[a.host(), b.host()])
    d = Driver(sched)
    await d.start("blocker")
    waiting = d.submit("waiting")
    await asyncio.wait_for(d.tasks[waiting], 10)
    assert waiting.host == "b"


async def test_with_model_aging_zero_no_request_waits_for_a_warm_host() -> None:
    sched, _ = fleet(FakeHost("a"), FakeHost("b", warm={"m"}), model_aging=0.0)
    d = Driver(sched)
    first = await d.start("first")
    assert first.host == "b", "a free warm host is still the better choice"
    second = await d.start("second")
    assert second.host == "a", "b is busy: the request takes the cold host at once"


async def test_model_aging_zero_on_one_engine_is_plain_fair_order() -> None:
    # Before: with model_aging 0 every cold request counted as aged at once and went first, so the order
    # alternated models instead of following the tenants' round-robin.
    sched, _ = make(slots=1, model_capacity=1, model_aging=0.0, warm=lambda: {"hot"})
    d = Driver(sched)
    blocker = await d.start("blocker", model="hot")
    await d.queue("A-hot", tenant="A", model="hot")
    await d.queue("B-cold", tenant="B", model="cold")
    await d.queue("C-hot", tenant="C", model="hot")
    await d.queue("D-cold", tenant="D", model="cold")
    assert await d.drain(blocker) == ["A-hot", "B-cold", "C-hot", "D-cold"]


# ---------------------------------------------------------------------------------------------- release, fairness


async def test_release_on_a_host_starts_the_next_request_there() -> None:
    sched, _ = fleet(FakeHost("a"), FakeHost("b"))
    d = Driver(sched)
    on_a, on_b = await d.start("on-a"), await d.start("on-b")
    assert (on_a.host, on_b.host) == ("a", "b")
    first, second = await d.queue("first", tenant="x"), await d.queue("second", tenant="y")
    assert await d.release(on_a) is first
    assert first.host == "a" and sched.running_on("b") == 1
    assert await d.release(on_b) is second
    assert second.host == "b"


async def test_fairness_between_two_tenants_holds_across_two_hosts() -> None:
    sched, clock = fleet(FakeHost("a", slots=2), FakeHost("b", slots=2))
    d = Driver(sched)
    blockers = [await d.start(f"blocker{i}", tenant="z") for i in range(4)]
    for i in range(30):  # a 10:1 flood: the heavy tenant queues ten requests for each of the light one's
        clock.advance(0.01)
        await d.queue(f"H{i}", tenant="heavy")
        if i % 10 == 9:
            await d.queue(f"L{i // 10}", tenant="light")
    released: set[Ticket] = set()
    running = list(blockers)
    for _ in range(100):  # release the oldest running request until everything ran
        if not running:
            break
        sched.release(running[0])
        released.add(running[0])
        await settle()
        running = [t for t in [*blockers, *d.granted] if t not in released]
    assert (sched.running, sched.queued) == (0, 0)
    order = d.order
    # Light's k-th request arrived after heavy's 10(k+1)-th; round-robin gives it the next turn after that.
    assert order[:8] == ["H0", "L0", "H1", "L1", "H2", "L2", "H3", "H4"], order
    assert order[8:] == labels("H", 30)[5:]
    assert {t.host for t in d.granted} == {"a", "b"}


# ---------------------------------------------------------------------------------------------- availability


async def test_a_host_going_down_keeps_its_queued_requests_queued_until_it_comes_back() -> None:
    a, b = FakeHost("a"), FakeHost("b", models={"m", "only-b"})
    sched, _ = fleet(a, b)
    d = Driver(sched)
    on_a, on_b = await d.start("on-a"), await d.start("on-b", model="only-b")
    waiting = await d.queue("waiting", model="only-b")
    b.up = False
    assert await d.release(on_b) is None, "b is down: its slot is not used"
    assert await d.release(on_a) is None, "a is free but does not serve only-b"
    assert (sched.queued, sched.running) == (1, 0)
    with pytest.raises(BackendUnavailable) as info:
        await sched.acquire(Ticket(tenant="t", model="only-b"), LONG_WAIT)
    assert info.value.retry_after is not None and info.value.retry_after > 0
    assert sched.queued == 1
    b.up = True
    sched.poke()
    await settle()
    assert d.granted == [waiting] and waiting.host == "b"


async def test_a_queued_request_moves_to_another_host_that_serves_its_model() -> None:
    a, b = FakeHost("a"), FakeHost("b")
    sched, _ = fleet(a, b)
    d = Driver(sched)
    on_a, on_b = await d.start("on-a"), await d.start("on-b")
    assert (on_a.host, on_b.host) == ("a", "b")
    b.warm.add("m")
    waiting = await d.queue("waiting")
    b.up = False
    assert await d.release(on_a) is waiting, "its warm host is down: it does not wait for it"
    assert waiting.host == "a"


async def test_a_queued_request_whose_hosts_stay_down_times_out() -> None:
    b = FakeHost("b", models={"only-b"})
    sched, _ = fleet(FakeHost("a"), b)
    d = Driver(sched)
    blocker = await d.start("blocker", model="only-b")
    late = d.submit("late", model="only-b", max_wait=0.01)
    await until(lambda: sched.queued == 1 or d.tasks[late].done())
    b.up = False
    sched.release(blocker)
    with pytest.raises(RequestTimeout):
        await asyncio.wait_for(d.tasks[late], 10)
    assert (sched.queued, sched.running, sched.running_on("b")) == (0, 0, 0)


async def test_a_model_no_host_serves_is_refused_at_once() -> None:
    sched, _ = fleet(FakeHost("a", models={"m1"}), FakeHost("b", models={"m2"}))
    with pytest.raises(ModelNotFound) as info:
        await sched.acquire(Ticket(tenant="t", model="m3"), LONG_WAIT)
    assert info.value.status == 404 and "m3" in info.value.message
    assert (sched.queued, sched.running) == (0, 0)
    assert sched.busy_models() == []


async def test_a_full_queue_is_refused_even_with_a_free_host_that_does_not_serve_the_model() -> None:
    sched, _ = fleet(FakeHost("a", models={"m1"}), FakeHost("b", models={"m2"}), max_queue=0)
    d = Driver(sched)
    await d.start("blocker", model="m1")
    with pytest.raises(QueueFull):
        await sched.acquire(Ticket(tenant="t", model="m1"), LONG_WAIT)
    assert (sched.queued, sched.running) == (0, 1)


async def test_one_engine_is_one_implicit_host() -> None:
    sched, _ = make(slots=2)
    d = Driver(sched)
    first = await d.start("first")
    assert first.host == LOCAL_HOST
    assert [h.name for h in sched.hosts] == [LOCAL_HOST]
    assert sched.running_on(LOCAL_HOST) == 1
    sched.release(first)
    assert sched.running_on(LOCAL_HOST) == 0


# ---------------------------------------------------------------------------------------------- property


async def test_randomized_operations_return_every_host_to_zero() -> None:
    rng = random.Random(515)
    hosts = [
        FakeHost("a", slots=2, models={"m0", "m1"}),
        FakeHost("b", slots=1, models={"m1", "m2"}),
        FakeHost("c", slots=3, models={"m0", "m2"}),
    ]
    sched, clock = fleet(*hosts, max_queue=4, model_aging=5.0)
    models = ["m0", "m1", "m2", "m3"]  # m3: no host serves it
    held: set[Ticket] = set()
    tasks: dict[Ticket, asyncio.Task[None]] = {}
    seen = Counter[str]()

    async def client(ticket: Ticket, max_wait: float) -> None:
        await sched.acquire(ticket, max_wait)
        held.add(ticket)

    def waiting_tickets() -> list[Ticket]:
        return [t for tenants in sched._queues.values() for queue in tenants.values() for t in queue]

    def check() -> None:
        for fake in hosts:
            assert 0 <= sched.running_on(fake.name) <= fake.slots
        assert sum(sched.running_on(f.name) for f in hosts) == sched.running
        for ticket in sched._running:
            assert ticket.model in next(f for f in hosts if f.name == ticket.host).models

    for _ in range(500):
        clock.advance(rng.random() * 2)
        op = rng.random()
        if op < 0.5:
            ticket = Ticket(
                tenant=f"t{rng.randrange(4)}", model=rng.choice(models), priority=rng.choice(list(Priority))
            )
            tasks[ticket] = asyncio.create_task(client(ticket, 0.0 if rng.random() < 0.1 else LONG_WAIT))
        elif op < 0.58:
            waiting = [t for t, task in tasks.items() if not task.done()]
            if waiting:
                tasks[rng.choice(waiting)].cancel()
        elif op < 0.85:
            if held:
                ticket = rng.choice(sorted(held, key=id))
                held.discard(ticket)
                sched.release(ticket)
        elif op < 0.93:
            fake = rng.choice(hosts)
            fake.up = not fake.up if rng.random() < 0.5 else True
            sched.poke()
        else:
            fake = rng.choice(hosts)
            fake.warm = set(rng.sample(sorted(fake.models), rng.randint(0, len(fake.models))))
            sched.poke()
        check()
        await settle(rng.randint(1, 3))
        check()
        if rng.random() < 0.2:  # after a decision, no waiting request could start on a free host
            sched.poke()
            now = clock()
            assert all(sched._placement.host_for(t, now, 5.0) is None for t in waiting_tickets())

    # Whatever the random mix gave (its timers run on the loop's clock), every refusal is met at least once.
    for fake in hosts:
        fake.up = False
    refused = Ticket(tenant="t0", model="m1")
    tasks[refused] = asyncio.create_task(client(refused, LONG_WAIT))
    await settle()
    for fake in hosts:
        fake.up = True
    sched.poke()
    await settle()
    await wind_down(sched, tasks.values(), held)
    for task in tasks.values():
        assert task.done()
        if task.cancelled():
            seen["cancelled"] += 1
        else:
            error = task.exception()
            seen[type(error).__name__ if error else "granted"] += 1
    assert [sched.running_on(f.name) for f in hosts] == [0, 0, 0]
    assert (sched.running, sched.queued) == (0, 0)
    assert sched.busy_models() == []
    for outcome in ("granted", "cancelled", "ModelNotFound", "BackendUnavailable", "RequestTimeout", "QueueFull"):
        assert seen[outcome] > 0, (outcome, seen)


# ---------------------------------------------------------------------------------------------- failover


async def test_a_request_moved_off_a_failed_host_keeps_its_place_ahead_of_requests_that_waited() -> None:
    a, b = FakeHost("a"), FakeHost("b")
    sched, clock = fleet(a, b, model_aging=0, max_queue=2)
    d = Driver(sched)
    first = await d.start("first", tenant="x")
    other = await d.start("other", tenant="y")
    assert (first.host, other.host) == ("a", "b")
    waiting = await d.queue("waiting", tenant="z")
    later = await d.queue("later", tenant="x")
    clock.advance(5)
    a.up = False  # a failed under "first": it moves, and goes neither behind "later" nor behind "waiting"
    moved = asyncio.create_task(sched.move(first, LONG_WAIT))
    await until(lambda: sched.queued == 3)
    assert not moved.done(), "a full queue does not refuse a request that had its slot"
    assert sched.running_on("a") == 0 and later.started_at is None, "a is down: nothing starts there"
    sched.release(other)
    await settle()
    assert moved.done() and later.started_at is None and waiting.started_at is None, "the moved request went first"
    await moved
    assert first.host == "b"
    assert first.waited == pytest.approx(5), "aged from its first arrival"
    a.up = True
    sched.poke()
    await until(lambda: waiting.started_at is not None)
    assert waiting.host == "a" and later.started_at is None, "then the fair order as before: z's turn"


async def test_a_move_with_no_other_host_for_the_model_is_refused_at_once() -> None:
    a, b = FakeHost("a", models={"m", "only-a"}), FakeHost("b")
    sched, _ = fleet(a, b)
    d = Driver(sched)
    ticket = await d.start("r", model="only-a")
    with pytest.raises(BackendUnavailable):  # a is still up (not taken out yet): never back to the host that failed
        await sched.move(ticket, LONG_WAIT)
    assert sched.running == 0 and sched.queued == 0 and sched.running_on("a") == 0
    assert sched.busy_models() == []


async def test_waiting_requests_no_host_can_take_any_more_end_when_the_scheduler_hears_of_it() -> None:
    a, b = FakeHost("a", models={"m", "only-a"}), FakeHost("b")
    sched, _ = fleet(a, b)
    d = Driver(sched)
    running = [await d.start("on-a", model="only-a"), await d.start("on-b")]
    stranded = d.submit("stranded", model="only-a")
    fine = d.submit("fine", model="m")
    await until(lambda: sched.queued == 2)
    a.up = False
    sched.poke()
    await settle()
    assert d.tasks[stranded].done(), "ended when the scheduler heard, not at its deadline"
    with pytest.raises(BackendUnavailable):
        await d.tasks[stranded]
    assert sched.queued == 1 and fine.started_at is None, "a request another host can take keeps waiting"
    sched.release(running[1])
    await d.tasks[fine]
    sched.release(running[0])
    assert fine.host == "b" and sched.busy_models() == ["m"], "the shed request is no longer counted"
