"""Quotas shared through a real redis-server: two bucket stores (as two replicas hold them) and two gateways
sharing one tenant's budget.

Budgets whose exact levels are asserted are per day (a fraction of a token per second comes back), so the
figures do not depend on how fast the machine is.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from shared_ollama.errors import BackendUnavailable
from shared_ollama.service.quotas.buckets import Charge, Rule
from shared_ollama.service.quotas.redis_buckets import KEY_PREFIX, RedisBuckets
from tests.integration.conftest import ServedGateway, chat, project
from tests.support.processes import free_port

Start = Callable[..., ServedGateway]
DAY = Rule("tokens_day", 8640, 86400.0)  # 0.1 token per second
REQUESTS = Rule("requests", 2, 60.0)


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[tuple[RedisBuckets, RedisBuckets]]:
    a, b = RedisBuckets(redis_url), RedisBuckets(redis_url)
    yield a, b
    await a.close()
    await b.close()


async def test_two_stores_share_one_budget(replicas: tuple[RedisBuckets, RedisBuckets]) -> None:
    a, b = replicas
    name = tenant()
    assert (await a.take(name, [Charge(REQUESTS, 1)])).taken
    assert (await b.take(name, [Charge(REQUESTS, 1)])).taken
    refused = await a.take(name, [Charge(REQUESTS, 1)])
    assert not refused.taken
    assert 29 < refused.retry_after([Charge(REQUESTS, 1)]) <= 30
    assert (await b.take(tenant(), [Charge(REQUESTS, 1)])).taken, "another tenant has its own buckets"


async def test_takes_are_all_or_nothing_and_settlement_leaves_debt(
    replicas: tuple[RedisBuckets, RedisBuckets], redis_url: str
) -> None:
    a, b = replicas
    name = tenant()
    taken = await a.take(name, [Charge(REQUESTS, 1), Charge(DAY, 8000)])
    assert taken.taken and taken.levels[0] == pytest.approx(1.0, abs=0.01)
    assert taken.levels[1] == pytest.approx(640, abs=1)
    both = [Charge(REQUESTS, 1), Charge(DAY, 1000)]
    refused = await b.take(name, both)
    assert not refused.taken and refused.refused_by(both) == [DAY]
    assert 3590 < refused.retry_after(both) <= 3600, "360 tokens missing at 0.1 per second"
    again = await b.take(name, [Charge(REQUESTS, 1)])
    assert again.taken and again.levels[0] == pytest.approx(0.0, abs=0.01), "the refusal took no request"
    settled = await b.settle(name, [Charge(DAY, 1000)])  # the engine counted 1000 more than reserved
    assert settled.taken and settled.levels[0] == pytest.approx(-360, abs=1)
    refund = await a.settle(name, [Charge(DAY, -100_000)])
    assert refund.levels == (8640.0,), "a refund fills the bucket no further than its limit"
    client: Redis = Redis.from_url(redis_url)
    try:
        assert await client.exists(f"{KEY_PREFIX}{name}:tokens_day") == 0, "a full bucket is not kept"
        ttl = await client.pttl(f"{KEY_PREFIX}{name}:requests")
        assert 0 < ttl <= 61_000, "a bucket expires when it would be full again"
    finally:
        await client.aclose()


async def test_an_unreachable_redis_is_backend_unavailable() -> None:
    store = RedisBuckets(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(BackendUnavailable) as failed:
        await store.take("t", [Charge(REQUESTS, 1)])
    assert failed.value.status == 503 and failed.value.retry_after
    await store.close()


async def test_two_gateways_share_a_tenants_request_quota(serve_gateway: Start, http: Any, redis_url: str) -> None:
    one = http(serve_gateway(redis_url=redis_url, requests_per_minute=2))
    two = http(serve_gateway(redis_url=redis_url, requests_per_minute=2))
    name = tenant()
    first = await one.post("/api/chat", json=chat(), headers=project(name))
    assert first.headers["X-Shared-Ollama-RateLimit-Remaining-Requests"] == "1"
    second = await two.post("/api/chat", json=chat(), headers=project(name))
    assert second.status_code == 200
    assert second.headers["X-Shared-Ollama-RateLimit-Remaining-Requests"] == "0", "the other replica's request counts"
    for client in (one, two):
        refused = await client.post("/api/chat", json=chat(), headers=project(name))
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "rate_limited"
        assert 25 < float(refused.json()["retry_after"]) <= 30
        assert refused.headers["Retry-After"] in {"26", "27", "28", "29", "30"}
    assert (await two.post("/api/chat", json=chat(), headers=project(tenant()))).status_code == 200
