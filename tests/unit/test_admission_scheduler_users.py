"""Fairness among the end users inside one tenant: its turn goes round-robin across the users its requests name.

Driven with a fake clock and no real sleeps (see ``tests/support/scheduler.py``).
"""

from __future__ import annotations

from tests.support.scheduler import Driver, make


async def test_a_flooding_user_does_not_delay_another_user_of_the_same_tenant() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    first = await d.start("busy", tenant="chat")
    for i in range(6):
        await d.queue(f"flood{i}", tenant="chat", user="flood")
    await d.queue("quiet0", tenant="chat", user="quiet")
    await d.queue("quiet1", tenant="chat", user="quiet")
    order = await d.drain(first)
    assert order[:4] == ["flood0", "quiet0", "flood1", "quiet1"], "turns alternate; FIFO would put quiet last"
    assert order[4:] == ["flood2", "flood3", "flood4", "flood5"]


async def test_users_share_the_tenants_turn_and_tenants_stay_round_robin() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    first = await d.start("busy", tenant="other")
    for i in range(3):
        await d.queue(f"a{i}", tenant="chat", user="alice")
    await d.queue("b0", tenant="chat", user="bob")
    await d.queue("o0", tenant="other")
    await d.queue("o1", tenant="other")
    order = await d.drain(first)
    assert order == ["a0", "o0", "b0", "o1", "a1", "a2"], order


async def test_the_least_recently_served_user_goes_first() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    first = await d.start("busy", tenant="chat")
    alice = await d.queue("alice0", tenant="chat", user="alice")
    assert await d.release(first) is alice
    await d.queue("alice1", tenant="chat", user="alice")
    await d.queue("bob0", tenant="chat", user="bob")
    assert await d.drain(alice) == ["bob0", "alice1"], "alice was served last: bob's turn"


async def test_a_tenant_without_users_keeps_its_fifo() -> None:
    sched, _ = make(slots=1)
    d = Driver(sched)
    first = await d.start("busy")
    for i in range(3):
        await d.queue(f"r{i}")
    assert await d.drain(first) == ["r0", "r1", "r2"]
