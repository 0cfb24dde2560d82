"""Admission order against the scripted engine: a flooding tenant gets its share, interactive goes before
batch, a client that leaves frees its place, and a random mix leaves every counter at zero.

Requests are held at the engine with gates (``options.fake_gate``) so that every test decides exactly when
they finish; nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from tests.integration.conftest import Engine, ServedGateway, assert_drained, chat, gate_name, project, stats, until

Start = Callable[..., ServedGateway]


async def test_a_flooding_tenant_gets_its_share_not_the_engine(serve_gateway: Start, engine: Engine, http: Any) -> None:
    gw = serve_gateway(engine_slots=1, max_inflight_text=60)
    client = http(gw)
    gate = gate_name()
    first = asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=project("flood")))
    await engine.waiting_at_least(gate, 1)
    flood = [
        asyncio.create_task(client.post("/api/chat", json=chat(model=f"a{i}"), headers=project("flood")))
        for i in range(59)
    ]

    async def flood_queued() -> bool:
        return (await stats(client))["queue_depth"] == 59

    await until(flood_queued, "the flood queued")
    polite = [
        asyncio.create_task(client.post("/api/chat", json=chat(model=f"b{i}"), headers=project("polite")))
        for i in range(6)
    ]

    async def all_queued() -> bool:
        return (await stats(client))["queue_depth"] == 65

    await until(all_queued, "everyone queued")
    before = len(engine.engine.received)
    await engine.open(gate)
    await asyncio.gather(first, *flood, *polite)
    order = [r["body"]["model"] for r in list(engine.engine.received)[before:]]
    last_polite = max(i for i, model in enumerate(order) if model.startswith("b"))
    flood_left = sum(1 for model in order[last_polite + 1 :] if model.startswith("a"))
    assert last_polite < 13, f"the polite tenant's 6 requests alternate with the flood: {order[:14]}"
    assert flood_left >= 45, "the flood was still draining when the polite tenant finished"
    await assert_drained(client)


async def test_interactive_requests_go_before_batch(serve_gateway: Start, engine: Engine, http: Any) -> None:
    gw = serve_gateway(engine_slots=1)
    client = http(gw)
    gate = gate_name()
    first = asyncio.create_task(client.post("/api/chat", json=chat(gate)))
    await engine.waiting_at_least(gate, 1)
    batch_headers = {**project("nightly"), "X-Shared-Ollama-Priority": "batch"}
    batch = asyncio.create_task(client.post("/api/chat", json=chat(model="batch-1"), headers=batch_headers))

    async def one_queued() -> bool:
        return (await stats(client))["by_class"]["batch"]["queued"] == 1

    await until(one_queued, "batch request queued")
    interactive = asyncio.create_task(client.post("/api/chat", json=chat(model="live-1"), headers=project("app")))

    async def two_queued() -> bool:
        return (await stats(client))["queue_depth"] == 2

    await until(two_queued, "interactive request queued")
    before = len(engine.engine.received)
    await engine.open(gate)
    await asyncio.gather(first, batch, interactive)
    assert [r["body"]["model"] for r in list(engine.engine.received)[before:]] == ["live-1", "batch-1"]
    bad = await client.post("/api/chat", json=chat(), headers={"X-Shared-Ollama-Priority": "urgent"})
    assert bad.status_code == 400


async def test_a_client_that_leaves_the_queue_frees_its_place(serve_gateway: Start, engine: Engine, http: Any) -> None:
    gw = serve_gateway(engine_slots=1)
    client = http(gw)
    gate = gate_name()
    running = asyncio.create_task(client.post("/api/chat", json=chat(gate)))
    await engine.waiting_at_least(gate, 1)
    for stream in (False, True):
        leaving = asyncio.create_task(client.post("/api/chat", json=chat(stream=stream), headers=project("gone")))

        async def queued() -> bool:
            return (await stats(client))["queue_depth"] == 1

        await until(queued, "queued")
        leaving.cancel()  # closes the connection: the gateway sees the client disconnect

        async def left() -> bool:
            s = await stats(client)
            return s["queue_depth"] == 0 and s["tenants"].get("gone", {}).get("text", {}).get("in_flight", 0) == 0

        await until(left, "the queue place freed")
    await engine.open(gate)
    assert (await running).status_code == 200
    await assert_drained(client)


async def test_randomised_mix_leaves_every_counter_at_zero(serve_gateway: Start, engine: Engine, http: Any) -> None:
    """Hundreds of requests: completions, engine errors, rejections, timeouts, streams and disconnects."""
    gw = serve_gateway(engine_slots=3, max_queue=40, max_inflight_text=8, queue_timeout_text=1.0)
    client = http(gw)
    rng = random.Random(20261126)
    gate = gate_name()
    outcomes: dict[str, int] = {}
    kinds = (
        ["ok"] * 90
        + ["stream"] * 45
        + ["fault-500"] * 30
        + ["fault-503"] * 30
        + ["slow"] * 15
        + ["held"] * 6
        + ["cancel"] * 42
        + ["cancel-stream"] * 42
    )
    rng.shuffle(kinds)

    async def one(kind: str) -> None:
        tenant = project(f"t{rng.randrange(3)}")
        if kind == "ok":
            call = client.post("/api/chat", json=chat(num_predict=rng.randrange(1, 6)), headers=tenant)
        elif kind in ("stream", "cancel-stream"):
            call = client.post("/api/chat", json=chat(stream=True, fake_token_ms=5, fake_tokens=20), headers=tenant)
        elif kind.startswith("fault"):
            call = client.post("/api/chat", json=chat(model=kind), headers=tenant)
        elif kind == "slow":  # runs past the 1 s deadline
            slow = chat(stream=rng.random() < 0.5, fake_token_ms=100, fake_tokens=40)
            call = client.post("/api/chat", json=slow, headers=tenant)
        else:  # held at the gate: ends at its deadline
            call = client.post("/api/chat", json=chat(gate), headers=tenant)
        task = asyncio.create_task(call)
        if kind.startswith("cancel"):
            await asyncio.sleep(rng.random() * 0.05)  # a random moment to hang up, not synchronisation
            task.cancel()
        try:
            resp = await task
            key = str(resp.status_code)
        except asyncio.CancelledError:
            key = "cancelled"
        outcomes[key] = outcomes.get(key, 0) + 1

    for wave in range(0, len(kinds), 30):  # 10 waves of 30 concurrent requests from 3 tenants
        await asyncio.gather(*(one(kind) for kind in kinds[wave : wave + 30]))
    await engine.open(gate)
    assert sum(outcomes.values()) == 300
    assert {"200", "502", "503", "cancelled"} <= set(outcomes), outcomes
    await assert_drained(client)
