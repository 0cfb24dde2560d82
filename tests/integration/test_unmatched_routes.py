"""Requests no route matches: logged and counted by method and a bounded template of their path, so an operator
sees which endpoint a client misses and a scan of random paths cannot grow the metrics without bound."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared_ollama.api.middleware import MAX_UNMATCHED_ROUTES


def _routes_of_404s(exposition: str) -> dict[str, float]:
    routes: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != "shared_ollama_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels["status"] == "404":
                routes[sample.labels["route"]] = routes.get(sample.labels["route"], 0.0) + sample.value
    return routes


async def test_an_unknown_endpoint_is_logged_and_counted_by_method_and_template(
    gateway: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shared_ollama.access")
    resp = await gateway.get("/api/nope/123?secret=x")
    assert resp.status_code == 404
    assert resp.json()["code"] == "not_found"
    lines = [r.getMessage() for r in caplog.records if r.name == "shared_ollama.access"]
    assert lines == ["GET /api/nope/… 404 not_found"]
    posted = await gateway.post("/v9/12345/x", json={})
    assert posted.status_code == 404
    assert _routes_of_404s((await gateway.get("/metrics")).text) == {"GET /api/nope/…": 1.0, "POST /v9/*/…": 1.0}


async def test_a_thousand_random_paths_make_a_bounded_number_of_route_labels(gateway: httpx.AsyncClient) -> None:
    for i in range(1000):
        resp = await gateway.get(f"/p{uuid.uuid4().hex[:12]}/{i}")
        assert resp.status_code == 404
    routes = _routes_of_404s((await gateway.get("/metrics")).text)
    assert len(routes) == MAX_UNMATCHED_ROUTES + 1
    assert routes["GET /(other)"] == 1000 - MAX_UNMATCHED_ROUTES
    assert sum(routes.values()) == 1000.0
