"""Accounting of clients that go away, and the tenant header on every answer after authentication.

A client that leaves is recorded one way whatever it was doing (uploading its body, waiting for a non-streamed
answer, reading a stream): status 499, code ``client_closed``, and never as an error of ours (no
``internal_error``, nothing in the recent errors). Raw loopback connections let a test hang up exactly when it
chooses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from tests.integration.conftest import Engine, ServedGateway, chat, gate_name, project, until
from tests.support.observability import sample_sum

Start = Callable[..., ServedGateway]
TENANT = "closer"


async def _summary(client: httpx.AsyncClient) -> dict[str, Any]:
    resp = await client.get("/api/v1/metrics")
    assert resp.status_code == 200
    return dict(resp.json())


async def _closed_count(client: httpx.AsyncClient) -> int:
    return int((await _summary(client))["requests"]["by_code"].get("client_closed", 0))


async def _wait_closed(client: httpx.AsyncClient, count: int) -> None:
    async def recorded() -> bool:
        return await _closed_count(client) == count

    await until(recorded, f"{count} requests recorded as client_closed")


def _head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"X-Shared-Ollama-Project: {TENANT}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def _assert_no_error_of_ours(client: httpx.AsyncClient) -> None:
    summary = await _summary(client)
    assert "internal_error" not in summary["requests"]["by_code"]
    assert summary["requests"]["errors"] == 0
    assert summary["recent_errors"] == []
    analytics = await client.get("/api/v1/analytics")
    assert analytics.status_code == 200
    assert analytics.json()["recent_errors"] == [], "the status page's recent errors stay empty"


async def test_a_client_leaving_while_uploading_its_body_is_499_client_closed(serve_gateway: Start, http: Any) -> None:
    gw = serve_gateway()
    client = http(gw)
    _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    partial = b'{"model": "fake", "messages": ['
    writer.write(_head("/api/chat", 1000) + partial)  # 1000 bytes announced, a few sent, then gone
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    await _wait_closed(client, 1)
    metrics = (await client.get("/metrics")).text
    closed = sample_sum(metrics, "shared_ollama_requests", "_total", route="/api/chat", status="499")
    assert closed == 1.0
    assert sample_sum(metrics, "shared_ollama_requests", "_total", code="client_closed") == 1.0
    await _assert_no_error_of_ours(client)


async def test_non_streamed_and_streamed_hang_ups_are_both_499_client_closed(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    gw = serve_gateway()
    client = http(gw)
    # A non-streamed request held at the engine; its client hangs up while it waits for the answer.
    gate = gate_name()
    held = orjson.dumps(chat(gate))
    _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(_head("/api/chat", len(held)) + held)
    await writer.drain()
    await engine.waiting_at_least(gate, 1)
    writer.close()
    await writer.wait_closed()
    await _wait_closed(client, 1)
    await engine.open(gate)
    # A streamed request whose client hangs up after the first bytes.
    slow = chat(stream=True, num_predict=3, fake_token_ms=4000)
    async with client.stream("POST", "/api/chat", json=slow, headers=project(TENANT)) as resp:
        assert resp.status_code == 200  # and the body is left unread: leaving closes the connection
    await _wait_closed(client, 2)

    metrics = (await client.get("/metrics")).text
    assert sample_sum(metrics, "shared_ollama_requests", "_total", code="client_closed", status="499") == 2.0
    assert sample_sum(metrics, "shared_ollama_requests", "_total", code="client_closed") == 2.0
    assert sample_sum(metrics, "shared_ollama_requests", "_total", tenant=TENANT, status="499") == 2.0
    await _assert_no_error_of_ours(client)


async def test_a_client_that_hangs_up_after_a_streams_final_line_was_answered(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    """Many clients stop reading at the ``done`` line without waiting for the chunked body's end: they received
    their whole answer, so it is counted as answered (200, its tokens in the usage), not ``client_closed``."""
    gw = serve_gateway()
    client = http(gw)
    gate = gate_name()
    body = orjson.dumps(chat(stream=True, num_predict=2, fake_hold_end=gate))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(_head("/api/chat", len(body)) + body)
    await writer.drain()
    seen = b""
    while b'"done":true' not in seen:  # the engine holds its response open after this line
        chunk = await asyncio.wait_for(reader.read(65536), timeout=30)
        assert chunk, "the stream ended before its final line"
        seen += chunk
    await engine.waiting_at_least(gate, 1)
    writer.close()
    await writer.wait_closed()

    async def recorded() -> bool:
        return (await _summary(client))["requests"]["total"] >= 1

    await until(recorded, "the stream recorded")
    await engine.open(gate)
    metrics = (await client.get("/metrics")).text
    assert sample_sum(metrics, "shared_ollama_requests", "_total", route="/api/chat", status="200") == 1.0
    assert await _closed_count(client) == 0
    usage = await client.get("/api/v1/usage", params={"window": "1h", "tenant": TENANT}, headers=project(TENANT))
    rows = usage.json()["rows"]
    assert sum(int(row["requests"]) for row in rows) == 1
    assert sum(int(row["completion_tokens"]) for row in rows) == 2


async def test_every_answer_after_authentication_names_its_tenant(serve_gateway: Start, http: Any) -> None:
    gw = serve_gateway()
    client = http(gw)
    deterministic = chat(temperature=0, num_predict=3)
    first = await client.post("/api/chat", json=deterministic, headers=project(TENANT))
    assert first.headers["X-Shared-Ollama-Cache"] == "miss"
    assert first.headers["X-Shared-Ollama-Tenant"] == TENANT
    hit = await client.post("/api/chat", json=deterministic, headers=project(TENANT))
    assert hit.status_code == 200
    assert hit.headers["X-Shared-Ollama-Cache"] == "hit"
    assert hit.headers["X-Shared-Ollama-Tenant"] == TENANT
    streamed_hit = await client.post("/api/chat", json={**deterministic, "stream": True}, headers=project(TENANT))
    assert streamed_hit.headers["X-Shared-Ollama-Cache"] == "hit"
    assert streamed_hit.headers["X-Shared-Ollama-Tenant"] == TENANT
    bad = await client.post("/api/chat", content=b"{not json", headers=project(TENANT))
    assert bad.status_code == 400
    assert bad.headers["X-Shared-Ollama-Tenant"] == TENANT
    operations = await client.get("/api/v1/queue/stats", headers=project(TENANT))
    assert operations.status_code == 200
    assert operations.headers["X-Shared-Ollama-Tenant"] == TENANT
