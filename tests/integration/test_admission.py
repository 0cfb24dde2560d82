"""Admission against the scripted engine: caps, the fair queue, deadlines, limits, cancellation, auth.

Requests are held at the engine with gates (``options.fake_gate``) so that every test decides exactly when
they finish; nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.conftest import Engine, ServedGateway, until

Start = Callable[..., ServedGateway]
JsonDict = dict[str, Any]


def chat(gate: str | None = None, *, model: str = "fake", stream: bool = False, **options: Any) -> JsonDict:
    opts: JsonDict = dict(options)
    if gate:
        opts["fake_gate"] = gate
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream, "options": opts}


def project(name: str) -> dict[str, str]:
    return {"X-Shared-Ollama-Project": name}


@pytest.fixture
async def http() -> AsyncIterator[Callable[[ServedGateway], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(gw: ServedGateway) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=gw.url, timeout=30, limits=httpx.Limits(max_connections=400))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def gate_name() -> str:
    return uuid.uuid4().hex


async def stats(client: httpx.AsyncClient) -> JsonDict:
    resp = await client.get("/api/v1/queue/stats")
    assert resp.status_code == 200
    return dict(resp.json())


async def assert_drained(client: httpx.AsyncClient) -> None:
    """Every counter back to exactly zero."""

    async def drained() -> bool:
        s = await stats(client)
        return s["queue_depth"] == 0 and s["engine_slots"]["in_use"] == 0

    await until(drained, "queue and slots drained")
    s = await stats(client)
    for name, kinds in s["tenants"].items():
        for kind, row in kinds.items():
            assert row["in_flight"] == 0, (name, kind, row)
            for priority in ("interactive", "batch"):
                assert row[priority] == {"queued": 0, "running": 0}, (name, kind, row)


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
    assert body["retry_after"] > 0
    assert int(busy.headers["Retry-After"]) >= 1
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
    assert int(full.headers["Retry-After"]) >= 1
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
    assert "Retry-After" in waited.headers
    await engine.open(gate)
    assert (await running).status_code == 200, "the patient tenant's own deadline (60 s) applies to it"
    await assert_drained(client)


async def test_a_stream_past_its_deadline_ends_with_one_timeout_frame(serve_gateway: Start, http: Any) -> None:
    gw = serve_gateway(queue_timeout_text=0.5)
    client = http(gw)
    body = chat(stream=True, num_predict=400, fake_token_ms=20)  # 8 s of tokens against a 0.5 s deadline
    async with client.stream("POST", "/api/chat", json=body) as resp:
        assert resp.status_code == 200
        lines = [orjson.loads(line) async for line in resp.aiter_lines() if line]
    assert any(not line.get("done") and "message" in line for line in lines), "tokens arrived before the deadline"
    assert lines[-1]["code"] == "request_timeout"
    assert sum(1 for line in lines if "error" in line) == 1
    await assert_drained(client)


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
            call = client.post("/api/chat", json=chat(stream=True, fake_token_ms=5, num_predict=20), headers=tenant)
        elif kind.startswith("fault"):
            call = client.post("/api/chat", json=chat(model=kind), headers=tenant)
        elif kind == "slow":  # runs past the 1 s deadline
            slow = chat(stream=rng.random() < 0.5, fake_token_ms=100, num_predict=40)
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
    assert int(resp.headers["X-Shared-Ollama-Queue-Wait-Ms"]) >= 0
    streamed = await client.post(
        "/v1/chat/completions", json={"model": "fake", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    assert streamed.headers["X-Shared-Ollama-Inflight-Limit"] == "5"
    default = await client.post("/api/chat", json=chat())
    assert default.headers["X-Shared-Ollama-Tenant"] == "default"
    bad = await client.post("/api/chat", json=chat(), headers=project("no spaces allowed"))
    assert bad.status_code == 400


KEYS = "web:key-web,ops:key-ops:admin"


async def test_auth_on_requires_a_valid_key_in_either_header(serve_gateway: Start, http: Any) -> None:
    gw = serve_gateway(api_keys=KEYS)
    client = http(gw)
    missing = await client.post("/api/chat", json=chat())
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthorized"
    wrong = await client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": "Bearer nope"},
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    assert (await client.get("/api/tags")).status_code == 401
    bearer = await client.post("/api/chat", json=chat(), headers={"Authorization": "Bearer key-web"})
    assert bearer.status_code == 200
    assert bearer.headers["X-Shared-Ollama-Tenant"] == "web"
    api_key = await client.post("/api/chat", json=chat(), headers={"X-API-Key": "key-ops"})
    assert api_key.headers["X-Shared-Ollama-Tenant"] == "ops"
    spoofed = await client.post("/api/chat", json=chat(), headers={"X-API-Key": "key-web", **project("ops")})
    assert spoofed.headers["X-Shared-Ollama-Tenant"] == "web", "with auth on the project header names nobody"
    assert (await client.get("/api/v1/health")).status_code == 200, "health stays open for monitors"


async def test_mutating_operations_are_admin_only_when_auth_is_on(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    gw = serve_gateway(api_keys=KEYS)
    client = http(gw)
    seen = len(engine.engine.received)
    user = await client.post("/api/v1/models/fake/unload", headers={"X-API-Key": "key-web"})
    assert user.status_code == 403
    assert user.json()["code"] == "forbidden"
    assert len(engine.engine.received) == seen
    admin = await client.post("/api/v1/models/fake/unload", headers={"X-API-Key": "key-ops"})
    assert admin.status_code == 200
    assert admin.json()["status"] == "unloaded"
    user_stats = (await client.get("/api/v1/queue/stats", headers={"X-API-Key": "key-web"})).json()
    assert set(user_stats["tenants"]) == {"web"}, "a user sees only its own tenant"
    admin_stats = (await client.get("/api/v1/queue/stats", headers={"X-API-Key": "key-ops"})).json()
    assert {"web", "ops"} <= set(admin_stats["tenants"])


async def test_auth_off_leaves_operations_open(serve_gateway: Start, http: Any) -> None:
    gw = serve_gateway()
    client = http(gw)
    resp = await client.post("/api/v1/models/fake/load")
    assert resp.status_code == 200
    assert (await stats(client))["auth"] == "off"
