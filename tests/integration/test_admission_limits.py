"""Admission limits against the scripted engine: tenant caps, the queue bound, deadlines, body and prompt
sizes, and the in-flight headers.

Requests are held at the engine with gates (``options.fake_gate``) so that every test decides exactly when
they finish; nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson

from tests.integration.conftest import Engine, ServedGateway, assert_drained, chat, gate_name, project, stats, until

Start = Callable[..., ServedGateway]


async def test_tenant_over_its_cap_gets_429_with_retry_after(serve_gateway: Start, engine: Engine, http: Any) -> None:
    gw = serve_gateway(max_inflight_text=2)
    client = http(gw)
    gate = gate_name()
    held = [asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=project("a"))) for _ in range(2)]
    await engine.waiting_at_least(gate, 2)
    busy = await client.post("/api/chat", json=chat(), headers=project("a"))
    assert busy.status_code == 429
    body = busy.json()
    assert body["code"] == "tenant_busy"
    assert "'a'" in body["error"] and "2 text requests" in body["error"]
    assert body["retry_after"] == 1.0, "no request has finished yet: the default service time"
    assert busy.headers["Retry-After"] == "1"
    assert busy.headers["X-Shared-Ollama-Inflight-Remaining"] == "0"
    other = await client.post("/api/chat", json=chat(), headers=project("b"))
    assert other.status_code == 200, "another tenant is not affected by a's cap"
    openai = await client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "x"}]},
        headers=project("a"),
    )
    assert openai.status_code == 429
    assert openai.json()["error"]["code"] == "tenant_busy"
    assert openai.json()["error"]["type"] == "rate_limit_error"
    await engine.open(gate)
    assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
    assert (await stats(client))["rejections"]["tenant_busy"] == 2
    await assert_drained(client)


async def test_full_queue_is_503_queue_full_without_reaching_the_engine(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    gw = serve_gateway(engine_slots=1, max_queue=2)
    client = http(gw)
    gate = gate_name()
    running = asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=project("a")))
    await engine.waiting_at_least(gate, 1)
    queued = [asyncio.create_task(client.post("/api/chat", json=chat(), headers=project(p))) for p in ("b", "c")]

    async def two_queued() -> bool:
        return (await stats(client))["queue_depth"] == 2

    await until(two_queued, "two queued")
    seen = len(engine.engine.received)
    full = await client.post("/api/generate", json={"model": "fake", "prompt": "x", "stream": False})
    assert full.status_code == 503
    assert full.json()["code"] == "queue_full"
    assert full.headers["Retry-After"] == "3", "two queued ahead of one slot, 1 s each by default: (2 / 1 + 1) s"
    assert full.json()["retry_after"] == 3.0
    assert len(engine.engine.received) == seen, "a full queue never touches the engine"
    await engine.open(gate)
    assert [r.status_code for r in await asyncio.gather(running, *queued)] == [200, 200, 200]
    await assert_drained(client)


async def test_waiting_past_the_deadline_is_request_timeout(
    serve_gateway: Start, engine: Engine, http: Any, tmp_path: Path
) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - name: patient\n    limits: {queue_timeout_text: 60}\n")
    gw = serve_gateway(engine_slots=1, queue_timeout_text=0.3, tenants_file=tenants)
    client = http(gw)
    # The deadline bounds a running request's total time too.
    alone = gate_name()
    overtime = await client.post("/api/chat", json=chat(alone), headers=project("hasty"))
    assert overtime.status_code == 503
    assert overtime.json()["code"] == "request_timeout"
    assert "0.3 s deadline" in overtime.json()["error"]
    await engine.open(alone)
    gate = gate_name()
    running = asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=project("patient")))
    await engine.waiting_at_least(gate, 1)
    waited = await client.post("/api/chat", json=chat(), headers=project("hasty"))
    assert waited.status_code == 503
    assert waited.json()["code"] == "request_timeout"
    assert "no engine slot" in waited.json()["error"]
    assert waited.headers["Retry-After"] == "1", "the estimate (the 0.3 s the first request ran) rounded up"
    await engine.open(gate)
    assert (await running).status_code == 200, "the patient tenant's own deadline (60 s) applies to it"
    await assert_drained(client)


async def test_a_stream_past_its_deadline_ends_with_one_timeout_frame(serve_gateway: Start, http: Any) -> None:
    gw = serve_gateway(queue_timeout_text=0.5)
    client = http(gw)
    body = chat(stream=True, fake_tokens=400, fake_token_ms=20)  # 8 s of tokens against a 0.5 s deadline
    async with client.stream("POST", "/api/chat", json=body) as resp:
        assert resp.status_code == 200
        lines = [orjson.loads(line) async for line in resp.aiter_lines() if line]
    assert any(not line.get("done") and "message" in line for line in lines), "tokens arrived before the deadline"
    assert lines[-1]["code"] == "request_timeout"
    assert sum(1 for line in lines if "error" in line) == 1
    await assert_drained(client)


async def test_body_over_the_limit_is_413_declared_or_chunked(serve_gateway: Start, http: Any) -> None:
    gw = serve_gateway(max_body_bytes=4096)
    client = http(gw)
    big = orjson.dumps(chat() | {"padding": "x" * 5000})
    declared = await client.post("/api/chat", content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413
    assert declared.json()["code"] == "request_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    chunked = await client.post("/v1/chat/completions", content=chunks())
    assert chunked.status_code == 413
    assert chunked.json()["error"]["code"] == "request_too_large"
    small = await client.post("/api/chat", json=chat())
    assert small.status_code == 200


async def test_prompt_over_the_token_limit_is_400_before_admission(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    gw = serve_gateway(max_prompt_tokens=1000)
    client = http(gw)

    def generations() -> int:
        return sum(1 for r in engine.engine.received if r["path"] in ("/api/chat", "/api/generate"))

    seen = generations()
    long_text = "word " * 2000  # 10,000 bytes: over 1,000 tokens by the estimate (the fake engine has no tokenizer)
    resp = await client.post("/api/chat", json={"model": "fake", "messages": [{"role": "user", "content": long_text}]})
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == "prompt_too_large"
    assert "limit is 1000" in body["error"] and "estimated" in body["error"]
    gen = await client.post("/api/v1/generate", json={"model": "fake", "prompt": long_text})
    assert gen.json()["code"] == "prompt_too_large"
    assert generations() == seen, "refused before reaching the engine"
    ok = await client.post(
        "/api/chat", json={"model": "fake", "stream": False, "messages": [{"role": "user", "content": "word " * 150}]}
    )
    assert ok.status_code == 200


async def test_successful_responses_carry_the_tenants_in_flight_state(serve_gateway: Start, http: Any) -> None:
    gw = serve_gateway(max_inflight_text=5)
    client = http(gw)
    resp = await client.post("/api/chat", json=chat(), headers=project("web"))
    assert resp.status_code == 200
    assert resp.headers["X-Shared-Ollama-Tenant"] == "web"
    assert resp.headers["X-Shared-Ollama-Inflight-Limit"] == "5"
    assert resp.headers["X-Shared-Ollama-Inflight-Remaining"] == "4"
    assert resp.headers["X-Shared-Ollama-Queue-Wait-Ms"] == "0", "admitted at once (a free slot): it never queued"
    streamed = await client.post(
        "/v1/chat/completions", json={"model": "fake", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    assert streamed.headers["X-Shared-Ollama-Inflight-Limit"] == "5"
    default = await client.post("/api/chat", json=chat())
    assert default.headers["X-Shared-Ollama-Tenant"] == "default"
    bad = await client.post("/api/chat", json=chat(), headers=project("no spaces allowed"))
    assert bad.status_code == 400
