"""The agents API's definitions and refusals, in process against the scripted engine: create, list, get, update,
delete, tenant scoping, every bad field a 400 naming it, the OpenAI ``agent:<name>`` model's refusals, and a run
stored and listed. (What a real model does with tools is proven in tests/e2e/test_agents_e2e.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from tests.integration.conftest import Engine, ServedGateway, assert_drained, chat, gate_name, project

A = project("agents-a")
B = project("agents-b")


async def test_definitions_are_kept_per_tenant_and_refusals_name_the_field(gateway: httpx.AsyncClient) -> None:
    created = await gateway.post(
        "/api/v1/agents/create", json={"name": "helper", "model": "fake", "tools": ["calculator"]}, headers=A
    )
    assert created.status_code == 201, created.text
    assert created.json()["model"] == "fake" and created.json()["tools"] == ["calculator"]
    again = await gateway.post("/api/v1/agents/create", json={"name": "helper", "model": "fake"}, headers=A)
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    assert (await gateway.get("/api/v1/agents/helper", headers=B)).status_code == 404
    assert [a["name"] for a in (await gateway.get("/api/v1/agents", headers=A)).json()["agents"]] == ["helper"]
    seen_by_b = (await gateway.get("/api/v1/agents", headers=B)).json()["agents"]  # auth off: every tenant is admin
    assert [(a["tenant"], a["name"]) for a in seen_by_b] == [("agents-a", "helper")]
    cases = [
        ({"name": "x", "model": "fake", "tools": ["nope"]}, "tools"),
        ({"name": "x", "model": "not-installed"}, "model"),
        ({"name": "x", "model": "fake", "max_steps": 33}, "max_steps"),
        ({"name": "x", "model": "fake", "max_steps": 0}, "max_steps"),
        ({"name": "bad name!", "model": "fake"}, "name"),
        ({"name": "x", "model": "fake", "tool_choice": "sometimes"}, "tool_choice"),
        ({"name": "x", "model": "fake", "shape": "round"}, "shape"),
    ]
    for body, param in cases:
        refused = await gateway.post("/api/v1/agents/create", json=body, headers=A)
        assert refused.status_code == 400 and param in refused.text, (body, refused.text)
    updated = await gateway.put("/api/v1/agents/helper", json={"model": "fake", "system": "Be brief."}, headers=A)
    assert updated.status_code == 200 and updated.json()["system"] == "Be brief." and updated.json()["tools"] == []
    renamed = await gateway.put("/api/v1/agents/helper", json={"name": "other", "model": "fake"}, headers=A)
    assert renamed.status_code == 400 and "name" in renamed.json()["error"]
    assert (await gateway.delete("/api/v1/agents/helper", headers=B)).status_code == 404
    assert (await gateway.delete("/api/v1/agents/helper", headers=A)).status_code == 200
    assert (await gateway.get("/api/v1/agents/helper", headers=A)).status_code == 404


async def test_a_run_is_answered_stored_and_listed(gateway: httpx.AsyncClient) -> None:
    await gateway.post("/api/v1/agents/create", json={"name": "echo", "model": "fake"}, headers=A)
    run = await gateway.post("/api/v1/agents/echo/run", json={"input": "hi"}, headers=A)
    assert run.status_code == 200, run.text
    done = run.json()
    assert done["stopped"] == "done" and done["output"] and done["usage"]["model_calls"] == 1
    assert done["steps"] == [{"type": "message", "step": 1, "content": done["output"]}]
    stored = (await gateway.get(f"/api/v1/agents/echo/runs/{done['run_id']}", headers=A)).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert (await gateway.get(f"/api/v1/agents/echo/runs/{done['run_id']}", headers=B)).status_code == 404
    streamed = await gateway.post("/api/v1/agents/echo/run", json={"input": "hi", "stream": True}, headers=A)
    events = [orjson.loads(line) for line in streamed.text.splitlines()]
    assert events[0] == {"type": "step_started", "step": 1} and events[-1]["type"] == "done"
    listed = (await gateway.get("/api/v1/agents/echo/runs", headers=A)).json()["runs"]
    assert [r["run_id"] for r in listed] == [events[-1]["run_id"], done["run_id"]]
    for body, param in [({}, "input"), ({"input": "a", "messages": [{"role": "user", "content": "b"}]}, "input")]:
        refused = await gateway.post("/api/v1/agents/echo/run", json=body, headers=A)
        assert refused.status_code == 400 and param in refused.json()["error"], refused.text
    refused = await gateway.post("/api/v1/agents/echo/run", json={"input": "a", "max_steps": 99}, headers=A)
    assert refused.status_code == 400 and "max_steps" in refused.json()["error"]
    missing = await gateway.post("/api/v1/agents/nobody/documents", json={"text": "a fact"}, headers=A)
    assert missing.status_code == 404


async def test_the_openai_agent_model_refuses_what_it_cannot_honour(gateway: httpx.AsyncClient) -> None:
    await gateway.post("/api/v1/agents/create", json={"name": "echo", "model": "fake"}, headers=A)
    ask = {"model": "agent:echo", "messages": [{"role": "user", "content": "hi"}]}
    answered = await gateway.post("/v1/chat/completions", json=ask, headers=A)
    assert answered.status_code == 200 and answered.json()["choices"][0]["message"]["content"]
    session = answered.headers["X-Shared-Ollama-Agent-Session"]
    again = await gateway.post(
        "/v1/chat/completions", json=ask, headers={**A, "X-Shared-Ollama-Agent-Session": session}
    )
    assert again.headers["X-Shared-Ollama-Agent-Session"] == session
    for extra, param in [({"temperature": 0.5}, "temperature"), ({"tools": []}, "tools")]:
        refused = await gateway.post("/v1/chat/completions", json={**ask, **extra}, headers=A)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text
    bad = await gateway.post(
        "/v1/chat/completions", json=ask, headers={**A, "X-Shared-Ollama-Agent-Session": "bad value!"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Shared-Ollama-Agent-Session", bad.text
    unknown = await gateway.post("/v1/chat/completions", json={**ask, "model": "agent:nobody"}, headers=A)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


async def test_a_streamed_run_refused_at_admission_is_an_http_error_with_retry_after(
    serve_gateway: Callable[..., ServedGateway], engine: Engine, http: Any
) -> None:
    """The response of a streamed run starts only once its first model call is admitted: a tenant at its cap gets
    the usual 429 with Retry-After (an SDK can retry it), on the service API and on the OpenAI surface alike."""
    client = http(serve_gateway(max_inflight_text=1))
    created = await client.post("/api/v1/agents/create", json={"name": "echo", "model": "fake"}, headers=A)
    assert created.status_code == 201
    gate = gate_name()
    held = asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=A))
    await engine.waiting_at_least(gate, 1)
    busy = await client.post("/api/v1/agents/echo/run", json={"input": "hi", "stream": True}, headers=A)
    assert busy.status_code == 429 and busy.json()["code"] == "tenant_busy" and busy.headers["Retry-After"]
    ask = {"model": "agent:echo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    refused = await client.post("/v1/chat/completions", json=ask, headers=A)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "tenant_busy"
    await engine.open(gate)
    assert (await held).status_code == 200
    streamed = await client.post("/api/v1/agents/echo/run", json={"input": "hi", "stream": True}, headers=A)
    assert streamed.status_code == 200 and orjson.loads(streamed.text.splitlines()[-1])["type"] == "done"
    await assert_drained(client)
