"""Quotas against the scripted engine: ``429 rate_limited`` with Retry-After and the rate-limit headers on every
surface, a refused request takes no place, no slot and never reaches the engine, tokens settled from the engine's
counts (streams included), cache hits cost a request and no tokens, per-tenant overrides.

The scripted engine answers ``prompt_eval_count`` 3 and ``eval_count`` 8 (``fake_tokens``), cut at
``num_predict``. Token budgets whose exact figures are asserted are per day (they refill by a fraction of a token
per second, so nothing here depends on how fast the machine is); requests are held at the engine with gates where
a test needs them running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import Engine, ServedGateway, assert_drained, chat, gate_name, project, stats

Start = Callable[..., ServedGateway]
RATE = "X-Shared-Ollama-RateLimit-"
DAY = 8640  # tokens per day: 0.1 token per second comes back
# chat("hi") reserves ceil(2 bytes / 3) + 4 per message (prompt and one message) + num_predict
RESERVED_HI = 1 + 8


def assert_rate_limited(resp: httpx.Response, openai: bool = False) -> float:
    assert resp.status_code == 429, resp.text
    error = resp.json()["error"] if openai else resp.json()
    assert error["code"] == "rate_limited"
    retry_after = float(error["retry_after"])
    assert resp.headers["Retry-After"] == str(max(1, -int(-retry_after // 1))), "the header is the field rounded up"
    return retry_after


async def test_over_the_request_quota_is_429_rate_limited_and_takes_no_place_or_slot(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    gw = serve_gateway(requests_per_minute=2, max_inflight_text=2)
    client = http(gw)
    gate = gate_name()
    held = [asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=project("a"))) for _ in range(2)]
    await engine.waiting_at_least(gate, 2)
    received = len(engine.engine.received)

    refused = await client.post("/api/chat", json=chat(), headers=project("a"))
    retry_after = assert_rate_limited(refused)
    assert 25 < retry_after <= 30, "2 per minute: one request comes back 30 s after the budget was used"
    assert "'a'" in refused.json()["error"] and "2 requests per minute" in refused.json()["error"]
    assert refused.headers[f"{RATE}Limit-Requests"] == "2"
    assert refused.headers[f"{RATE}Remaining-Requests"] == "0"
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert int(refused.headers[f"{RATE}Reset"]) in range(55, 61)
    assert len(engine.engine.received) == received, "a refused request never reaches the engine"
    snapshot = await stats(client)
    assert snapshot["tenants"]["a"]["text"]["in_flight"] == 2, "only the two held requests hold places"
    assert snapshot["queue_depth"] == 0 and snapshot["engine_slots"]["in_use"] == 2
    assert snapshot["rejections"]["rate_limited"] == 1
    assert "tenant_busy" not in snapshot["rejections"], "the quota is checked before the in-flight cap"

    openai = await client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "x"}]},
        headers=project("a"),
    )
    assert_rate_limited(openai, openai=True)
    assert openai.json()["error"]["type"] == "rate_limit_error"
    other = await client.post("/api/chat", json=chat(), headers=project("b"))
    assert other.status_code == 200, "another tenant has a budget of its own"
    assert other.headers[f"{RATE}Remaining-Requests"] == "1"

    await engine.open(gate)
    answers = await asyncio.gather(*held)
    assert [r.status_code for r in answers] == [200, 200]
    assert sorted(r.headers[f"{RATE}Remaining-Requests"] for r in answers) == ["0", "1"]
    await assert_drained(client)


async def test_tokens_are_settled_from_the_engine_counts_and_refused_past_the_budget(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    client = http(serve_gateway(tokens_per_day=DAY))
    first = await client.post("/api/chat", json=chat(num_predict=20), headers=project("t"))
    assert first.status_code == 200
    assert first.headers[f"{RATE}Limit-Tokens"] == str(DAY)
    assert first.headers[f"{RATE}Limit-Tokens-Day"] == str(DAY)
    used = first.json()["prompt_eval_count"] + first.json()["eval_count"]
    assert used == 3 + 8, "the scripted answer is 8 tokens long: it ends before its cap of 20"
    assert first.headers[f"{RATE}Remaining-Tokens"] == str(DAY - used), "settled: the engine's count, not 29"
    assert first.headers["x-ratelimit-remaining-tokens"] == str(DAY - used)
    assert "x-ratelimit-limit-requests" not in first.headers, "no request quota, no request headers"

    streamed = await client.post(
        "/api/chat", json=chat(num_predict=30, fake_tokens=30, stream=True), headers=project("t")
    )
    assert streamed.status_code == 200
    assert streamed.headers[f"{RATE}Remaining-Tokens"] == str(DAY - used - RESERVED_HI - 30), "reserved when sent"
    after = await client.post("/api/chat", json=chat(num_predict=1), headers=project("t"))
    assert after.headers[f"{RATE}Remaining-Tokens"] == str(DAY - used - 33 - 4), "the stream settled at its count"

    huge = await client.post("/api/chat", json=chat(num_predict=DAY), headers=project("t"))
    retry_after = assert_rate_limited(huge)
    # the request needs the whole day's budget (it is clamped to it): the 48 tokens used come back at 0.1 per s
    assert 470 < retry_after <= 480
    assert f"{DAY} tokens per day" in huge.json()["error"]
    await assert_drained(client)


async def test_a_cache_hit_costs_a_request_and_no_tokens(serve_gateway: Start, http: Any) -> None:
    client = http(serve_gateway(requests_per_minute=100, tokens_per_day=DAY))
    headers = {**project("c"), "X-Shared-Ollama-Cache": "exact"}
    miss = await client.post("/api/chat", json=chat(num_predict=5), headers=headers)
    assert miss.headers["X-Shared-Ollama-Cache"] == "miss"
    hit = await client.post("/api/chat", json=chat(num_predict=5), headers=headers)
    assert hit.headers["X-Shared-Ollama-Cache"] == "hit"
    assert hit.headers[f"{RATE}Remaining-Requests"] == "98"
    after = await client.post("/api/chat", json=chat(num_predict=1), headers=project("c"))
    assert after.headers[f"{RATE}Remaining-Requests"] == "97"
    assert after.headers[f"{RATE}Remaining-Tokens"] == str(DAY - 8 - 4), "only the miss and this one cost tokens"


async def test_tenant_overrides_from_the_tenants_file(serve_gateway: Start, http: Any, tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n"
        "  - name: free\n    limits: {requests_per_minute: 0}\n"
        "  - name: tight\n    limits: {requests_per_minute: 1}\n"
    )
    client = http(serve_gateway(requests_per_minute=5, tenants_file=path))
    for _ in range(6):
        free = await client.post("/api/chat", json=chat(), headers=project("free"))
        assert free.status_code == 200, "0 lifts the service's limit for this tenant"
        assert f"{RATE}Limit-Requests" not in free.headers
    assert (await client.post("/api/chat", json=chat(), headers=project("tight"))).status_code == 200
    assert_rate_limited(await client.post("/api/chat", json=chat(), headers=project("tight")))
    other = await client.post("/api/chat", json=chat(), headers=project("anyone"))
    assert other.headers[f"{RATE}Limit-Requests"] == "5", "everyone else has the service's limit"


async def test_requests_refused_before_the_engine_give_their_reservation_back(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    gw = serve_gateway(requests_per_minute=3, max_inflight_text=1)
    client = http(gw)
    gate = gate_name()
    held = asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=project("r")))
    await engine.waiting_at_least(gate, 1)
    for _ in range(3):
        busy = await client.post("/api/chat", json=chat(), headers=project("r"))
        assert busy.json()["code"] == "tenant_busy", "past the quota check, stopped by the in-flight cap"
    await engine.open(gate)
    assert (await held).status_code == 200
    again = await client.post("/api/chat", json=chat(), headers=project("r"))
    assert again.status_code == 200, "the three busy refusals cost nothing"
    assert again.headers[f"{RATE}Remaining-Requests"] == "1"
    await assert_drained(client)
