"""Metrics, the JSON summary and request accounting, against the scripted engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Engine, ServedGateway, chat, gate_name, project, until

Start = Callable[..., ServedGateway]
Labels = dict[str, str]


async def scrape(client: httpx.AsyncClient) -> dict[str, list[tuple[Labels, float]]]:
    """Every sample of every family, by sample name."""
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[Labels, float]]] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def value(samples: dict[str, list[tuple[Labels, float]]], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


async def test_metrics_move_per_tenant_and_code(serve_gateway: Start, engine: Engine) -> None:
    gw = serve_gateway(max_inflight_text=1)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        before = await scrape(client)
        assert value(before, "shared_ollama_requests_total") == 0
        assert value(before, "shared_ollama_queue_depth") == 0
        for _ in range(3):
            assert (
                await client.post("/api/chat", json=chat(num_predict=5), headers=project("alpha"))
            ).status_code == 200
        assert (
            await client.post(
                "/v1/chat/completions",
                json={"model": "fake", "messages": [{"role": "user", "content": "x"}]},
                headers=project("beta"),
            )
        ).status_code == 200
        assert (
            await client.post("/api/chat", json=chat(model="fault-404"), headers=project("beta"))
        ).status_code == 404
        assert (await client.post("/api/chat", content=b"{", headers=project("beta"))).status_code == 400
        gate = gate_name()
        held = asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=project("alpha")))
        await engine.waiting_at_least(gate, 1)
        assert (await client.post("/api/chat", json=chat(), headers=project("alpha"))).status_code == 429
        during = await scrape(client)
        assert value(during, "shared_ollama_tenant_in_flight", tenant="alpha", kind="text") == 1
        assert value(during, "shared_ollama_engine_slots", state="in_use") == 1
        await engine.open(gate)
        assert (await held).status_code == 200

        async def recorded() -> bool:
            return value(await scrape(client), "shared_ollama_requests_total") == 8

        await until(recorded, "all 8 requests recorded")
        after = await scrape(client)
        ok = "shared_ollama_requests_total"
        assert value(after, ok, tenant="alpha", code="ok", route="/api/chat", surface="ollama") == 4
        assert value(after, ok, tenant="beta", code="ok", surface="openai", route="/v1/chat/completions") == 1
        assert value(after, ok, tenant="beta", code="model_not_found", status="404") == 1
        assert value(after, ok, code="invalid_request", status="400") == 1
        assert value(after, ok, tenant="alpha", code="tenant_busy", status="429") == 1
        assert value(after, "shared_ollama_rejections_total", code="tenant_busy", tenant="alpha") == 1
        assert value(after, "shared_ollama_tokens_total", tenant="alpha", kind="generated") == 3 * 5 + 8
        assert value(after, "shared_ollama_queue_wait_seconds_count", tenant="alpha") == 4
        # alpha's 3 answers, its held request and its 429 (the 404 and the 400 were for other models)
        assert value(after, "shared_ollama_request_duration_seconds_count", surface="ollama", model="fake") == 5
        assert value(after, "shared_ollama_engine_up") == 1
        assert value(after, "shared_ollama_tenant_in_flight") == 0

        summary = (await client.get("/api/v1/metrics")).json()
        assert summary["requests"]["total"] == 8
        assert summary["requests"]["errors"] == 3
        assert summary["requests"]["by_tenant"]["alpha"] == 5
        assert summary["requests"]["by_code"]["tenant_busy"] == 1
        assert summary["queue"]["depth"] == 0
        assert {e["code"] for e in summary["recent_errors"]} == {"model_not_found", "invalid_request", "tenant_busy"}


async def test_streams_record_time_to_first_token_and_tokens(serve_gateway: Start) -> None:
    gw = serve_gateway()
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        resp = await client.post("/api/chat", json=chat(stream=True, num_predict=6), headers=project("s"))
        assert resp.status_code == 200

        async def recorded() -> bool:
            return value(await scrape(client), "shared_ollama_time_to_first_token_seconds_count", model="fake") == 1

        await until(recorded, "the stream recorded")
        samples = await scrape(client)
        assert value(samples, "shared_ollama_tokens_total", tenant="s", kind="generated") == 6
        assert value(samples, "shared_ollama_generation_tokens_per_second_count", model="fake") == 1
        perf = (await client.get("/api/v1/performance/stats")).json()
        fake = perf["models"]["fake"]
        assert fake["requests"] == 1
        assert fake["time_to_first_token_seconds"]["p50"] > 0
        assert fake["tokens_per_second"]["p50"] > 0


async def test_analytics_and_operational_paths(serve_gateway: Start) -> None:
    gw = serve_gateway()
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        for tenant in ("north", "north", "south"):
            await client.post(
                "/api/generate", json={"model": "fake", "prompt": "x", "stream": False}, headers=project(tenant)
            )
        for _ in range(3):  # polling operational endpoints is not traffic
            await client.get("/api/v1/health")
            await client.get("/api/v1/queue/stats")

        async def three() -> bool:
            data = (await client.get("/api/v1/analytics", params={"window": "1h"})).json()
            return bool(data["totals"]["requests"] == 3)

        await until(three, "three requests in analytics")
        grouped = (await client.get("/api/v1/analytics", params={"window": "1h", "group_by": "tenant"})).json()
        assert {g["key"]: g["requests"] for g in grouped["groups"]} == {"north": 2, "south": 1}
        bad = await client.get("/api/v1/analytics", params={"window": "1y"})
        assert bad.status_code == 400
        assert bad.json()["code"] == "invalid_request"
        page = await client.get("/dashboard")
        assert page.status_code == 200
        assert "data-testid" in page.text
