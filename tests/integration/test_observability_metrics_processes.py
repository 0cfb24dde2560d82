"""Prometheus counters summed across gateway worker processes, against the scripted engine in a process of its
own (the ``process_engine`` and ``gateways`` fixtures of ``tests/integration/conftest.py``). Every wait is bounded
polling; every process started here is stopped.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.observability import CHAT_ROUTE, Gateways, fake_chat, project, sample_sum, until

pytestmark = pytest.mark.integration  # the scripted engine, in processes of its own

# --- Prometheus counters across worker processes


def test_metrics_are_summed_across_worker_processes(gateways: Gateways, tmp_path: Path) -> None:
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}
    url1, _ = gateways.start(tmp_path / "data-1", "multiproc-1", **shared)
    url2, _ = gateways.start(tmp_path / "data-2", "multiproc-2", **shared)
    with httpx.Client(base_url=url1, timeout=30) as gw1, httpx.Client(base_url=url2, timeout=30) as gw2:
        for client, count in ((gw1, 3), (gw2, 2)):
            for _ in range(count):
                resp = client.post(CHAT_ROUTE, json=fake_chat(), headers=project("multi"))
                assert resp.status_code == 200, resp.text

        def requests_total(client: httpx.Client) -> float:
            resp = client.get("/metrics")
            assert resp.status_code == 200, resp.text
            return sample_sum(resp.text, "shared_ollama_requests", "_total", route=CHAT_ROUTE)

        for client in (gw1, gw2):
            until(lambda client=client: requests_total(client) >= 5, "5 requests in the aggregated scrape")
            assert requests_total(client) == 5
        scrape = gw2.get("/metrics").text
        assert sample_sum(scrape, "shared_ollama_tokens", "_total", tenant="multi", kind="generated") == 10
        assert sample_sum(scrape, "shared_ollama_request_duration_seconds", "_count", model="fake") == 5
        # The JSON summary stays per process.
        assert gw1.get("/api/v1/metrics").json()["requests"]["by_tenant"] == {"multi": 3}
        assert gw2.get("/api/v1/metrics").json()["requests"]["by_tenant"] == {"multi": 2}
    assert any(prom_dir.iterdir()), "the values live in the shared directory"


# --- token accounting with the real engine
