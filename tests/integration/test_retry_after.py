"""Every 429 and 503, on every surface and path, says when to retry: the ``Retry-After`` header and the body's
``retry_after`` field, streamed error frames included (the NDJSON error line, the SSE error event)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.integration.conftest import Engine, ServedGateway, chat, gate_name, project, stats, until
from tests.support.processes import free_port

Start = Callable[..., ServedGateway]
OPENAI_CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def _native(resp: httpx.Response, status: int, code: str, seconds: int) -> None:
    assert resp.status_code == status
    assert resp.json()["code"] == code
    assert resp.headers["Retry-After"] == str(seconds)
    assert resp.json()["retry_after"] == float(seconds)


def _openai(resp: httpx.Response, status: int, code: str, seconds: int) -> None:
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["code"] == code
    assert resp.headers["Retry-After"] == str(seconds)
    assert error["retry_after"] == float(seconds)


async def test_a_request_past_its_deadline_is_503_with_retry_after(
    serve_gateway: Start, engine: Engine, http: Any, tmp_path: Path
) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - name: holder\n    limits: {queue_timeout_text: 60}\n")
    gw = serve_gateway(queue_timeout_text=0.3, engine_slots=1, tenants_file=tenants)
    client = http(gw)
    # Waiting for a slot past the deadline (before any request finished: the estimate is its 1 s default).
    holding = gate_name()
    held = asyncio.create_task(client.post("/api/chat", json=chat(holding), headers=project("holder")))
    await engine.waiting_at_least(holding, 1)
    openai = await client.post("/v1/chat/completions", json=OPENAI_CHAT)
    _openai(openai, 503, "request_timeout", 1)
    await engine.open(holding)
    assert (await held).status_code == 200, "the holder's own deadline (60 s) applies to it"
    # Running on the engine past the deadline.
    gate = gate_name()
    native = await client.post("/api/chat", json=chat(gate))
    _native(native, 503, "request_timeout", 1)
    assert "0.3 s deadline" in native.json()["error"]
    await engine.open(gate)


async def test_a_stream_past_its_deadline_ends_with_a_frame_carrying_retry_after(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    gw = serve_gateway(queue_timeout_text=0.5)
    client = http(gw)
    slow = chat(stream=True, fake_tokens=400, fake_token_ms=20)  # 8 s of tokens against a 0.5 s deadline
    async with client.stream("POST", "/api/chat", json=slow) as resp:
        assert resp.status_code == 200
        lines = [orjson.loads(line) async for line in resp.aiter_lines() if line]
    assert lines[-1]["code"] == "request_timeout"
    assert lines[-1]["retry_after"] == 1.0
    config = engine.engine.config
    paced, natural = config.token_ms, config.tokens
    config.token_ms, config.tokens = 20, 400  # the OpenAI surface has no per-request options: script the engine
    try:
        sse_body = {**OPENAI_CHAT, "stream": True, "max_tokens": 400}
        async with client.stream("POST", "/v1/chat/completions", json=sse_body) as resp:
            assert resp.status_code == 200
            events = [line.removeprefix("data: ") async for line in resp.aiter_lines() if line.startswith("data: ")]
    finally:
        config.token_ms, config.tokens = paced, natural
    last = orjson.loads(events[-1])
    assert last["error"]["code"] == "request_timeout"
    assert last["error"]["retry_after"] == 1.0


async def test_an_engine_answering_503_gives_503_with_retry_after(serve_gateway: Start, http: Any) -> None:
    client = http(serve_gateway())
    _native(await client.post("/api/chat", json=chat(model="fault-503")), 503, "backend_unavailable", 2)
    _openai(
        await client.post("/v1/chat/completions", json={**OPENAI_CHAT, "model": "fault-503"}),
        503,
        "backend_unavailable",
        2,
    )
    streamed = await client.post("/api/chat", json=chat(model="fault-503", stream=True))
    _native(streamed, 503, "backend_unavailable", 2)


async def test_an_unreachable_engine_gives_503_with_retry_after(tmp_path: Path) -> None:
    from shared_ollama.app import create_app
    from shared_ollama.settings import Settings

    settings = Settings(engine="external", ollama_url=f"http://127.0.0.1:{free_port()}", data_dir=tmp_path)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            _native(await client.post("/api/chat", json=chat()), 503, "backend_unavailable", 2)
            health = await client.get("/api/v1/health")
            assert health.status_code == 503
            assert health.headers["Retry-After"] == "1", "even a 503 not raised as a service error"


async def test_queue_full_and_tenant_busy_carry_retry_after(serve_gateway: Start, engine: Engine, http: Any) -> None:
    gw = serve_gateway(engine_slots=2, max_queue=0, max_inflight_text=1)
    client = http(gw)
    gate = gate_name()
    running = [asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=project("a")))]
    await engine.waiting_at_least(gate, 1)
    busy = await client.post("/api/chat", json=chat(), headers=project("a"))
    assert busy.status_code == 429
    assert busy.json()["code"] == "tenant_busy"
    assert busy.headers["Retry-After"] == "1"
    assert busy.json()["retry_after"] == 1.0, "no service time measured yet: the default estimate"
    running.append(asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=project("b"))))
    await engine.waiting_at_least(gate, 2)
    full = await client.post("/api/chat", json=chat(), headers=project("c"))
    assert full.status_code == 503
    assert full.json()["code"] == "queue_full"
    assert full.headers["Retry-After"] == "1"
    assert full.json()["retry_after"] == 1.0
    await engine.open(gate)
    assert [r.status_code for r in await asyncio.gather(*running)] == [200, 200]

    async def idle() -> bool:
        return (await stats(client))["engine_slots"]["in_use"] == 0

    await until(idle, "the slot given back")
