"""Label sets stay bounded whatever names clients send: random model names and random project headers (auth
off) do not grow /metrics, the performance window or the per-tenant counters without limit."""

from __future__ import annotations

import uuid

import httpx

from shared_ollama.settings import Settings
from tests.integration.conftest import chat, project, until
from tests.integration.test_metrics import scrape, value

FLOOD = 500
SPARE = 4
"""Label values besides the bounded names: ``other``, ``unknown``, ``default``, ``-`` and the like."""


def distinct(samples: dict[str, list[tuple[dict[str, str], float]]], label: str) -> set[str]:
    return {labels[label] for series in samples.values() for labels, _ in series if label in labels}


async def test_random_models_and_tenants_leave_bounded_label_sets(gateway: httpx.AsyncClient) -> None:
    bounds = Settings()
    assert 2 * max(bounds.metrics_max_models, bounds.metrics_max_tenants) < FLOOD
    first = await gateway.post("/api/chat", json=chat(num_predict=2), headers=project("alpha"))
    assert first.status_code == 200
    statuses: dict[int, int] = {}
    for i in range(FLOOD):
        # half of them unknown to the engine (404), half answered (the scripted engine answers any other name)
        model = f"missing-{uuid.uuid4().hex}" if i % 2 else f"any-{uuid.uuid4().hex}"
        resp = await gateway.post("/api/chat", json=chat(model=model, num_predict=1), headers=project(f"t-{i}"))
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
    assert statuses == {200: FLOOD // 2, 404: FLOOD // 2}
    last = await gateway.post("/api/chat", json=chat(num_predict=2), headers=project("alpha"))
    assert last.status_code == 200

    async def recorded() -> bool:
        return value(await scrape(gateway), "shared_ollama_requests_total") == FLOOD + 2

    await until(recorded, "every request recorded")
    samples = await scrape(gateway)
    models, tenants = distinct(samples, "model"), distinct(samples, "tenant")
    assert len(models) <= bounds.metrics_max_models + SPARE, len(models)
    assert len(tenants) <= bounds.metrics_max_tenants + SPARE, len(tenants)
    assert not any(m.startswith("missing-") for m in models), "a name the engine does not know has no series"
    assert {"unknown", "other"} <= models
    assert "other" in tenants
    assert value(samples, "shared_ollama_requests_total", model="unknown", code="model_not_found") == FLOOD // 2
    assert value(samples, "shared_ollama_requests_total", model="fake", tenant="alpha", code="ok") == 2
    assert value(samples, "shared_ollama_tokens_total", model="fake", tenant="alpha", kind="generated") == 4

    perf = (await gateway.get("/api/v1/performance/stats")).json()["models"]
    assert len(perf) <= bounds.metrics_max_models + SPARE
    assert perf["fake"]["requests"] == 2
    summary = (await gateway.get("/api/v1/metrics")).json()
    assert len(summary["requests"]["by_tenant"]) <= bounds.metrics_max_tenants + SPARE
    assert summary["requests"]["by_tenant"]["alpha"] == 2
