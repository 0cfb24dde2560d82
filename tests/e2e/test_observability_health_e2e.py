"""Observability with a real gateway process and its real engine: health through an engine crash and the
supervisor's restart. Every wait is bounded polling; the gateway started here is stopped in ``finally``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import start_gateway
from tests.support.observability import JsonDict, sample_sum, until
from tests.support.processes import stop

pytestmark = pytest.mark.e2e


# --- health through an engine crash and the supervisor's restart


def test_health_degraded_with_a_reason_then_healthy_after_restart(
    model_store: Path, tmp_path: Path, artifacts_dir: Path
) -> None:
    """test_supervision.py covers requests during the outage; this one the health body and the restart gauge."""
    url, proc = start_gateway(
        model_store,
        tmp_path,
        artifacts_dir / "gateway-observability-health.log",
        env={"SHARED_OLLAMA_ENGINE_RESTART_BACKOFF": "2"},
    )
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            first = client.get("/api/v1/health")
            assert first.status_code == 200
            before = first.json()
            assert before["status"] == "healthy" and "reason" not in before
            assert before["engine"]["restarts"] == 0
            old_pid = int(before["engine"]["pid"])
            os.kill(old_pid, signal.SIGKILL)

            def degraded() -> JsonDict | None:
                resp = client.get("/api/v1/health")
                return resp.json() if resp.status_code == 503 else None

            down = until(degraded, "health 503 after the engine was killed", timeout=60)
            assert down["status"] == "degraded"
            assert down["ollama_status"] == "restarting"
            assert "engine exited" in down["reason"], down

            def healthy() -> JsonDict | None:
                resp = client.get("/api/v1/health")
                body: JsonDict = resp.json()
                return body if resp.status_code == 200 else None

            up = until(healthy, "health 200 after the supervisor's restart", timeout=120)
            assert up["status"] == "healthy" and "reason" not in up
            assert up["engine"]["pid"] not in (None, old_pid)
            assert up["engine"]["restarts"] >= 1
            scrape = client.get("/metrics").text
            assert sample_sum(scrape, "shared_ollama_engine_restarts", "") >= 1
            assert sample_sum(scrape, "shared_ollama_engine_up", "") == 1
    finally:
        stop(proc)
