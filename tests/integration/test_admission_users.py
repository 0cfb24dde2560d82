"""Fairness among the end users of one tenant (a chat front end sharing one key), against the scripted engine:
a flooding user does not push another user of the same tenant to the back, the per-user cap, and where the user
comes from (header, Open WebUI's header when trusted, OpenAI's ``user``).

Requests are held at the engine with gates (``options.fake_gate``), so each test decides when they finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import yaml

from tests.integration.conftest import Engine, ServedGateway, assert_drained, chat, gate_name, stats, until

Start = Callable[..., ServedGateway]
TENANT = {"X-Shared-Ollama-Project": "webui"}


def user(name: str) -> dict[str, str]:
    return {**TENANT, "X-Shared-Ollama-User": name}


async def test_a_flooding_user_does_not_push_another_user_of_the_tenant_back(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    gw = serve_gateway(engine_slots=1, max_inflight_text=60)
    client = http(gw)
    gate = gate_name()
    first = asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=user("flood")))
    await engine.waiting_at_least(gate, 1)
    flood = [
        asyncio.create_task(client.post("/api/chat", json=chat(model=f"a{i}"), headers=user("flood")))
        for i in range(20)
    ]

    async def flood_queued() -> bool:
        return (await stats(client))["queue_depth"] == 20

    await until(flood_queued, "the flood queued")
    quiet = [
        asyncio.create_task(client.post("/api/chat", json=chat(model=f"b{i}"), headers=user("quiet"))) for i in range(3)
    ]

    async def all_queued() -> bool:
        return (await stats(client))["queue_depth"] == 23

    await until(all_queued, "everyone queued")
    before = len(engine.engine.received)
    await engine.open(gate)
    await asyncio.gather(first, *flood, *quiet)
    order = [r["body"]["model"] for r in list(engine.engine.received)[before:]]
    last_quiet = max(i for i, model in enumerate(order) if model.startswith("b"))
    assert last_quiet < 7, f"the quiet user's 3 requests alternate with the flood: {order[:8]}"
    await assert_drained(client)


async def test_the_per_user_cap_refuses_only_that_user(serve_gateway: Start, engine: Engine, http: Any) -> None:
    gw = serve_gateway(max_inflight_per_user=1)
    client = http(gw)
    gate = gate_name()
    held = asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=user("ann")))
    await engine.waiting_at_least(gate, 1)
    refused = await client.post("/api/chat", json=chat(), headers=user("ann"))
    assert refused.status_code == 429
    assert refused.json()["code"] == "user_busy" and "ann" in refused.json()["error"]
    assert float(refused.headers["Retry-After"]) > 0
    other = await client.post("/api/chat", json=chat(), headers=user("bob"))
    assert other.status_code == 200, other.text
    anonymous = await client.post("/api/chat", json=chat(), headers=TENANT)
    assert anonymous.status_code == 200, "a request naming no user has no per-user cap"
    too_long = await client.post("/api/chat", json=chat(), headers=user("x" * 129))
    assert too_long.status_code == 400 and "X-Shared-Ollama-User" in too_long.json()["error"]
    await engine.open(gate)
    assert (await held).status_code == 200
    await assert_drained(client)


async def test_users_from_openai_user_and_open_webui_header_when_trusted(
    serve_gateway: Start, engine: Engine, http: Any, tmp_path: Any
) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"tenants": [{"name": "webui", "policy": {"openwebui_users": True}}]}))
    gw = serve_gateway(max_inflight_per_user=1, tenants_file=tenants)
    client = http(gw)
    gate = gate_name()
    webui = {**TENANT, "X-OpenWebUI-User-Id": "u-1"}
    held = asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=webui))
    await engine.waiting_at_least(gate, 1)
    assert (await client.post("/api/chat", json=chat(), headers=webui)).json()["code"] == "user_busy"
    untrusted = {"X-Shared-Ollama-Project": "elsewhere", "X-OpenWebUI-User-Id": "u-1"}
    assert (await client.post("/api/chat", json=chat(), headers=untrusted)).status_code == 200
    openai_body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "user": "u-1"}
    other_tenant = {"X-Shared-Ollama-Project": "api"}
    gated = {**openai_body, "user": "u-2"}
    assert (await client.post("/v1/chat/completions", json=gated, headers=other_tenant)).status_code == 200
    refused = await client.post("/v1/chat/completions", json=openai_body, headers=TENANT)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "user_busy"
    await engine.open(gate)
    assert (await held).status_code == 200
    await assert_drained(client)
