"""The scheduler's model warmth: warm models first while the requested ones do not all fit, bounded by aging."""

from __future__ import annotations

import pytest

from tests.support.scheduler import Driver, make

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
