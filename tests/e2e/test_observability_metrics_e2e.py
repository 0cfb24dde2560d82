"""Token accounting of a real gateway process against the real engine, with few, short generations. Every
wait is bounded polling; every process started here is stopped."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.conftest import start_gateway
from tests.support.observability import (
    CHAT_MODEL,
    CHAT_ROUTE,
    JsonDict,
    project,
    sample_sum,
    until,
)
from tests.support.processes import stop


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
