"""Regressions found in review: places released on hang-ups with Redis, cached answers past a full queue,
unexpected errors accounted as errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from tests.integration.conftest import Engine, ServedGateway, until

Start = Callable[..., ServedGateway]
TENANT = {"X-Shared-Ollama-Project": "t"}
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_client_hanging_up_on_a_stream_frees_its_redis_place_at_once(
    serve_gateway: Start, redis_url: str
) -> None:
    gw = serve_gateway(redis_url=redis_url, max_inflight_text=1, redis_lease_seconds=60)
    slow = {**CHAT, "stream": True, "options": {"fake_token_ms": 4000, "num_predict": 3}}
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        async with client.stream("POST", "/api/chat", json=slow, headers=TENANT) as resp:
            assert resp.status_code == 200
            await asyncio.sleep(0.5)  # the client's own pace: it hangs up while the first token is still 4 s away

        async def freed() -> bool:
            stats = (await client.get("/api/v1/queue/stats", headers=TENANT)).json()
            return bool(stats["tenants"]["t"]["text"]["in_flight"] == 0)

        await until(freed, "the place released well before its 60 s lease", limit=10.0)
        again = await client.post("/api/chat", json={**CHAT, "stream": False}, headers=TENANT)
        assert again.status_code == 200


async def test_a_cached_answer_is_served_while_the_queue_is_full(serve_gateway: Start, engine: Engine) -> None:
    gw = serve_gateway(engine_slots=1, max_queue=0)
    deterministic = {**CHAT, "stream": False, "options": {"temperature": 0, "num_predict": 3}}
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        assert (await client.post("/api/chat", json=deterministic)).headers["X-Shared-Ollama-Cache"] == "miss"
        gate = "review-full-queue"
        held = asyncio.create_task(
            client.post("/api/chat", json={**CHAT, "stream": False, "options": {"fake_gate": gate}})
        )
        await engine.waiting_at_least(gate, 1)
        other = await client.post("/api/chat", json={**CHAT, "stream": False, "options": {"num_predict": 2}})
        assert other.status_code == 503 and other.json()["code"] == "queue_full"
        cached = await client.post("/api/chat", json=deterministic)
        assert cached.status_code == 200 and cached.headers["X-Shared-Ollama-Cache"] == "hit"
        await engine.open(gate)
        assert (await held).status_code == 200


async def test_an_unexpected_error_is_accounted_as_an_internal_error(serve_gateway: Start) -> None:
    gw = serve_gateway()

    async def broken(request: Any) -> Any:
        raise RuntimeError("boom")

    gw.app.state.gateway.get = broken  # the next /api/tags fails in a way nothing expects
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        resp = await client.get("/api/tags")
        assert resp.status_code == 500
        assert resp.json()["code"] == "internal_error"
    # uvicorn closes a connection whose request raised: ask on a new one
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:

        async def recorded() -> bool:
            summary = (await client.get("/api/v1/metrics")).json()
            return bool(summary["requests"]["by_code"].get("internal_error") == 1)

        await until(recorded, "the 500 recorded as internal_error")
        assert "client_closed" not in (await client.get("/api/v1/metrics")).json()["requests"]["by_code"]
