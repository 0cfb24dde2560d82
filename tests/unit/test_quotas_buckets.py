"""Quota buckets in process: refill over the window, all-or-nothing takes, debt after settlement, Retry-After,
forgetting full buckets and the bound on how many are kept. A fake clock drives every step."""

from __future__ import annotations

import pytest

from shared_ollama.service.quotas.buckets import Charge, LocalBuckets, Outcome, Rule

RPM = Rule("requests", 2, 60.0)
TPM = Rule("tokens", 100, 60.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_request_rule_refuses_past_its_limit_and_says_when_one_fits() -> None:
    clock = Clock()
    store = LocalBuckets(clock=clock)
    one = [Charge(RPM, 1)]
    assert (await store.take("a", one)).levels == (1.0,)
    assert (await store.take("a", one)).levels == (0.0,)
    refused = await store.take("a", one)
    assert not refused.taken
    assert refused.retry_after(one) == pytest.approx(30.0), "2 per minute: one comes back every 30 s"
    assert refused.refused_by(one) == [RPM]
    clock.now += 29.0
    assert not (await store.take("a", one)).taken
    clock.now += 1.0
    assert (await store.take("a", one)).taken, "30 s later one request fits again"


async def test_tenants_are_independent() -> None:
    store = LocalBuckets(clock=Clock())
    assert (await store.take("a", [Charge(RPM, 2)])).taken
    assert not (await store.take("a", [Charge(RPM, 1)])).taken
    assert (await store.take("b", [Charge(RPM, 1)])).taken


async def test_charges_are_taken_together_or_not_at_all() -> None:
    store = LocalBuckets(clock=Clock())
    assert (await store.take("a", [Charge(RPM, 1), Charge(TPM, 90)])).levels == (1.0, 10.0)
    both = [Charge(RPM, 1), Charge(TPM, 50)]
    refused = await store.take("a", both)
    assert not refused.taken
    assert refused.refused_by(both) == [TPM], "a request is left, 50 tokens are not"
    assert refused.retry_after(both) == pytest.approx(24.0), "40 tokens missing at 100/60 per second"
    assert refused.levels == (1.0, 10.0), "nothing was taken from the request bucket either"


async def test_settlement_may_leave_debt_that_delays_the_next_request() -> None:
    clock = Clock()
    store = LocalBuckets(clock=clock)
    assert (await store.take("a", [Charge(TPM, 100)])).levels == (0.0,)
    settled = await store.settle("a", [Charge(TPM, 30)])  # the engine counted 130 tokens: 30 more than reserved
    assert settled.levels == (-30.0,)
    refused = await store.take("a", [Charge(TPM, 10)])
    assert refused.retry_after([Charge(TPM, 10)]) == pytest.approx(24.0), "40 tokens to refill at 100/60 per s"


async def test_a_refund_never_fills_a_bucket_past_its_limit() -> None:
    store = LocalBuckets(clock=Clock())
    await store.take("a", [Charge(TPM, 40)])
    assert (await store.settle("a", [Charge(TPM, -70)])).levels == (100.0,)
    assert len(store) == 0, "a full bucket is forgotten"


async def test_a_bucket_refills_to_its_limit_and_is_then_forgotten() -> None:
    clock = Clock()
    store = LocalBuckets(clock=clock)
    await store.take("a", [Charge(TPM, 60)])
    assert len(store) == 1
    clock.now += 12.0  # 20 tokens back
    assert (await store.take("a", [Charge(TPM, 0)])).levels == (pytest.approx(60.0),)
    clock.now += 3600.0
    assert (await store.take("a", [Charge(TPM, 0)])).levels == (100.0,)
    assert len(store) == 0


async def test_the_store_keeps_a_bounded_number_of_buckets() -> None:
    store = LocalBuckets(clock=Clock(), max_buckets=3)
    for name in ("a", "b", "c", "d"):
        await store.take(name, [Charge(RPM, 1)])
    assert len(store) == 3
    assert (await store.take("a", [Charge(RPM, 2)])).taken, "the oldest was forgotten: a full bucket again"
    assert not (await store.take("d", [Charge(RPM, 2)])).taken


def test_rule_arithmetic() -> None:
    assert TPM.rate == pytest.approx(100 / 60)
    assert TPM.refilled(-10.0, 6.0) == pytest.approx(0.0)
    assert TPM.refilled(90.0, 600.0) == 100.0
    assert TPM.until_full(40.0) == pytest.approx(36.0)
    assert TPM.wait(50.0, 40.0) == 0.0
    assert Outcome(True, (1.0,)).retry_after([Charge(TPM, 5)]) == 0.0
    with pytest.raises(ValueError, match="positive limit"):
        Rule("requests", 0, 60.0)
