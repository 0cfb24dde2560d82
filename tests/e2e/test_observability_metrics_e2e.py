"""Observability with real gateway processes: Prometheus counters summed across worker processes, and token
accounting against the real engine.

The first test runs against the scripted engine in a process of its own (the ``fake_engine`` and ``gateways``
fixtures of ``tests/e2e/conftest.py``); the second uses the real engine, with few, short generations. Every
wait is bounded polling; every process started here is stopped.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.conftest import start_gateway
from tests.support.observability import (
    CHAT_MODEL,
    CHAT_ROUTE,
    Gateways,
    JsonDict,
    fake_chat,
    project,
    sample_sum,
    until,
)
from tests.support.processes import stop

# --- Prometheus counters across worker processes


@pytest.mark.integration  # the scripted engine
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


@pytest.mark.e2e
def test_token_metrics_match_the_real_engines_counts(
    engine_url: str, model_store: Path, tmp_path: Path, artifacts_dir: Path
) -> None:
    url, proc = start_gateway(
        model_store,
        tmp_path,
        artifacts_dir / "gateway-observability-tokens.log",
        env={"SHARED_OLLAMA_ENGINE": "external", "SHARED_OLLAMA_OLLAMA_URL": engine_url},
    )
    options = {"num_predict": 8, "temperature": 0}
    tenant = project("acct")
    prompts = ["Name a colour.", "Name a fruit.", "Name an animal."]
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            finals: list[JsonDict] = []
            for text in prompts[:2]:
                body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": text}], "options": options}
                resp = client.post(CHAT_ROUTE, json=body, headers=tenant)
                assert resp.status_code == 200, resp.text
                finals.append(resp.json())
            body = {
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": prompts[2]}],
                "options": options,
                "stream": True,
            }
            with client.stream("POST", CHAT_ROUTE, json=body, headers=tenant) as resp:
                assert resp.status_code == 200
                chunks = [orjson.loads(line) for line in resp.iter_lines() if line.strip()]
            assert len(chunks) >= 2 and chunks[-1]["done"] is True, chunks[-1]
            finals.append(chunks[-1])
            generated = sum(int(f["eval_count"]) for f in finals)
            prompted = sum(int(f.get("prompt_eval_count") or 0) for f in finals)
            assert 0 < generated <= 3 * 8

            def scraped() -> str | None:
                text = client.get("/metrics").text
                count = sample_sum(text, "shared_ollama_requests", "_total", tenant="acct", route=CHAT_ROUTE)
                return text if count >= 3 else None

            scrape = until(scraped, "the 3 requests in /metrics")
            assert sample_sum(scrape, "shared_ollama_requests", "_total", tenant="acct") == 3
            assert sample_sum(scrape, "shared_ollama_tokens", "_total", kind="generated", tenant="acct") == generated
            assert sample_sum(scrape, "shared_ollama_tokens", "_total", kind="prompt", tenant="acct") == prompted
            ttft = sample_sum(scrape, "shared_ollama_time_to_first_token_seconds", "_count", model=CHAT_MODEL)
            assert ttft >= 1

            perf = client.get("/api/v1/performance/stats", headers=tenant)
            assert perf.status_code == 200
            row = perf.json()["models"][CHAT_MODEL]
            assert row["requests"] == 3 and row["errors"] == 0, row
            assert row["tokens_per_second"]["p50"] > 0, row
            assert row["time_to_first_token_seconds"] is not None, row

            summary = client.get("/api/v1/metrics").json()
            assert summary["requests"]["by_tenant"]["acct"] == 3
            assert summary["tokens"] == {"prompt": prompted, "generated": generated}
    finally:
        stop(proc)
