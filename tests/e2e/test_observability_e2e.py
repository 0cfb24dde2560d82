"""Observability with real gateway processes: analytics that survive a restart and stay per tenant, Prometheus
counters summed across worker processes, JSON access logs without prompts, health through an engine crash,
and token accounting against the real engine.

Most tests run against the scripted engine in a process of its own (``tests.support.fake_engine``): they are
about the gateway's accounting, not about generation. The last one uses the real engine, with few, short
generations. Every wait is bounded polling; every process started here is stopped in ``finally``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import start_gateway
from tests.support.processes import fake_engine_process, free_port, spawn, stop, wait_http_ok

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
POLL_TIMEOUT = 30.0
CHAT_MODEL = "smollm2:135m"
CHAT_ROUTE = "/api/v1/chat"
JsonDict = dict[str, Any]
T = TypeVar("T")


def until(check: Callable[[], T], what: str, timeout: float = POLL_TIMEOUT) -> T:
    """Poll ``check`` until it returns something truthy (bounded) and return that: readiness polling."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for: {what}"
        time.sleep(0.05)


def project(name: str) -> dict[str, str]:
    return {"X-Shared-Ollama-Project": name}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def fake_chat(model: str = "fake", content: str = "hi") -> JsonDict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "stream": False,
        "options": {"num_predict": 2},
    }


def sample_sum(text: str, family: str, suffix: str, **labels: str) -> float:
    """The sum of the samples of ``family`` whose name ends with ``suffix`` and whose labels include ``labels``."""
    total = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name != family:
            continue
        for sample in fam.samples:
            if sample.name.endswith(suffix) and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.fixture(scope="module")
def fake_engine(artifacts_dir: Path) -> Iterator[str]:
    """The scripted engine in a process of its own, shared by the module's gateways."""
    with fake_engine_process(artifacts_dir / "fake-engine-observability.log") as url:
        yield url


class Gateways:
    """``shared-ollama serve`` processes in front of the scripted engine; all stopped by the fixture."""

    def __init__(self, engine_url: str, log_dir: Path) -> None:
        self.engine_url = engine_url
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, data_dir: Path, log_name: str, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        full_env = {
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": self.engine_url,
            "SHARED_OLLAMA_DATA_DIR": str(data_dir),
            **env,
        }
        proc = spawn(
            ["serve", "--host", "127.0.0.1", "--port", str(port)],
            env=full_env,
            log_path=self.log_dir / f"gateway-observability-{log_name}.log",
        )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/api/v1/health", proc, timeout=60)
        return url, proc

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)


@pytest.fixture
def gateways(fake_engine: str, artifacts_dir: Path) -> Iterator[Gateways]:
    started = Gateways(fake_engine, artifacts_dir)
    try:
        yield started
    finally:
        started.stop_all()


def analytics(client: httpx.Client, headers: dict[str, str] | None = None, **params: str) -> JsonDict:
    resp = client.get("/api/v1/analytics", params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def groups_by_key(result: JsonDict) -> dict[str, JsonDict]:
    return {str(group["key"]): group for group in result["groups"]}


# --- 1. analytics survive a restart


def test_analytics_survive_a_graceful_restart(gateways: Gateways, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # tenant: (answered, failed) — 25 requests in all, 5 of them errors (the engine answers 404 for fault-404)
    plan = {"alpha": (12, 3), "beta": (8, 2)}
    url, proc = gateways.start(data_dir, "restart-1")
    with httpx.Client(base_url=url, timeout=30) as client:
        for tenant, (ok, failed) in plan.items():
            for _ in range(ok):
                resp = client.post(CHAT_ROUTE, json=fake_chat(), headers=project(tenant))
                assert resp.status_code == 200, resp.text
            for _ in range(failed):
                resp = client.post(CHAT_ROUTE, json=fake_chat("fault-404"), headers=project(tenant))
                assert resp.status_code == 404, resp.text
                assert resp.json()["code"] == "model_not_found"
    stop(proc)
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete; a SIGKILL (-9) would mean stop() gave up.
    assert proc.returncode in (0, -signal.SIGTERM), proc.returncode
    assert b"Application shutdown complete" in (data_dir / "logs" / "api.log").read_bytes(), "lifespan shutdown ran"

    url, _ = gateways.start(data_dir, "restart-2")
    with httpx.Client(base_url=url, timeout=30) as client:
        result = analytics(client, window="1h", group_by="tenant")
    assert result["totals"]["requests"] == 25, result
    assert result["totals"]["errors"] == 5, result
    assert result["totals"]["rejected"] == 0, "the 404s came from the engine, not from admission"
    groups = groups_by_key(result)
    assert set(groups) == set(plan), result
    for tenant, (ok, failed) in plan.items():
        row = groups[tenant]
        assert row["requests"] == ok + failed, row
        assert row["errors"] == failed, row
        assert row["completion_tokens"] == 2 * ok, row  # the scripted engine generates num_predict tokens
        assert row["prompt_tokens"] == 3 * ok, row  # ... after a prompt of 3 tokens
    errors = result["recent_errors"]
    assert len(errors) == 5, errors
    assert {(e["status"], e["code"], e["model"], e["route"]) for e in errors} == {
        (404, "model_not_found", "fault-404", CHAT_ROUTE)
    }
    assert sorted(e["tenant"] for e in errors) == ["alpha"] * 3 + ["beta"] * 2


# --- 2. a tenant reads only its own analytics; metrics are for admins


def test_a_tenant_cannot_read_another_tenants_analytics(gateways: Gateways, tmp_path: Path) -> None:
    url, _ = gateways.start(tmp_path / "data", "auth", SHARED_OLLAMA_API_KEYS="a:key-a,b:key-b,ops:key-ops:admin")
    a, b, ops = bearer("key-a"), bearer("key-b"), bearer("key-ops")
    with httpx.Client(base_url=url, timeout=30) as client:
        # a: 2 requests (1 error); b: 3 requests (1 error). The project header is ignored when auth is on.
        for headers, ok in ((a, 1), (b, 2)):
            for _ in range(ok):
                resp = client.post(CHAT_ROUTE, json=fake_chat(), headers={**headers, **project("ops")})
                assert resp.status_code == 200, resp.text
            resp = client.post(CHAT_ROUTE, json=fake_chat("fault-404"), headers={**headers, **project("ops")})
            assert resp.status_code == 404, resp.text

        # Records are written after the last byte: wait until the admin sees all 5.
        def all_five() -> JsonDict | None:
            result = analytics(client, ops, window="1h", group_by="tenant")
            return result if result["totals"]["requests"] >= 5 else None

        everyone = until(all_five, "the 5 requests in the admin's analytics")
        assert everyone["totals"]["requests"] == 5, everyone
        assert {k: (g["requests"], g["errors"]) for k, g in groups_by_key(everyone).items()} == {
            "a": (2, 1),
            "b": (3, 1),
        }
        assert everyone["tenant"] is None
        assert sorted(e["tenant"] for e in everyone["recent_errors"]) == ["a", "b"]
        only_b = analytics(client, ops, window="1h", group_by="tenant", tenant="b")
        assert only_b["tenant"] == "b" and only_b["totals"]["requests"] == 3

        for params in ({}, {"tenant": "a"}):
            mine = analytics(client, a, window="1h", group_by="tenant", **params)
            assert mine["tenant"] == "a", "the tenant filter is forced for a user key"
            assert mine["totals"]["requests"] == 2 and mine["totals"]["errors"] == 1, mine
            assert [g["key"] for g in mine["groups"]] == ["a"], mine
            assert [e["tenant"] for e in mine["recent_errors"]] == ["a"], mine
        by_model = analytics(client, a, window="1h", group_by="model")
        assert {g["key"]: g["requests"] for g in by_model["groups"]} == {"fake": 1, "fault-404": 1}

        denied = client.get("/api/v1/analytics", params={"window": "1h", "tenant": "b"}, headers=a)
        assert denied.status_code == 403, denied.text
        assert denied.json()["code"] == "forbidden"
        assert client.get("/api/v1/analytics", params={"window": "1h"}).status_code == 401

        for path in ("/metrics", "/api/v1/metrics"):
            for user in (a, b):
                resp = client.get(path, headers=user)
                assert resp.status_code == 403, (path, resp.text)
                assert resp.json()["code"] == "forbidden"
            assert client.get(path).status_code == 401, path
            resp = client.get(path, headers=ops)
            assert resp.status_code == 200, (path, resp.text)
        summary = client.get("/api/v1/metrics", headers=ops).json()
        assert summary["requests"]["by_tenant"] == {"a": 2, "b": 3}


# --- 3. Prometheus counters across worker processes


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


# --- 4. JSON logs with the request id, without prompts


def test_access_log_is_json_with_the_request_id_and_no_prompt(gateways: Gateways, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url, proc = gateways.start(data_dir, "logs")
    request_id = f"obs-{uuid.uuid4().hex[:12]}"
    marker = f"zebracrossing{uuid.uuid4().hex[:8]}"
    log_file = data_dir / "logs" / "api.log"
    with httpx.Client(base_url=url, timeout=30) as client:
        resp = client.post(
            CHAT_ROUTE,
            json=fake_chat(content=f"Please remember the word {marker}."),
            headers={**project("logger"), "X-Shared-Ollama-Request-Id": request_id},
        )
        assert resp.status_code == 200, resp.text
        assert resp.headers["X-Shared-Ollama-Request-Id"] == request_id
        # A failing and a refused request carrying the marker too: errors must not log the prompt either.
        failed = client.post(
            CHAT_ROUTE, json=fake_chat("fault-404", content=marker), headers={"X-Shared-Ollama-Request-Id": "obs-err"}
        )
        assert failed.status_code == 404
        refused = client.post(CHAT_ROUTE, json={**fake_chat(content=marker), "options": {"num_predict": "many"}})
        assert refused.status_code == 400

        def access_lines() -> list[JsonDict]:
            if not log_file.exists():
                return []
            complete = log_file.read_bytes().split(b"\n")[:-1]  # a line still being written is left for later
            entries = [orjson.loads(line) for line in complete if line.strip()]
            return [e for e in entries if e.get("logger") == "shared_ollama.access"]

        def mine() -> JsonDict | None:
            return next((e for e in access_lines() if e.get("request_id") == request_id), None)

        entry = until(mine, f"the access line of {request_id} in {log_file}")
        until(lambda: len(access_lines()) >= 3, "the three access lines")
    assert entry["tenant"] == "logger"
    assert entry["model"] == "fake"
    assert entry["status"] == 200
    assert entry["code"] == "ok"
    assert entry["level"] == "info"
    assert entry["completion_tokens"] == 2
    error_entry = next(e for e in access_lines() if e.get("request_id") == "obs-err")
    assert (error_entry["status"], error_entry["code"], error_entry["model"]) == (404, "model_not_found", "fault-404")

    stop(proc)  # everything flushed, shutdown lines included
    raw = log_file.read_bytes()
    lines = [line for line in raw.splitlines() if line.strip()]
    assert lines
    for line in lines:
        entry = orjson.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict) and {"ts", "level", "logger", "msg"} <= entry.keys(), entry
    assert marker.encode() not in raw, "prompts are not logged by default"
    stderr_log = gateways.log_dir / "gateway-observability-logs.log"
    assert marker.encode() not in stderr_log.read_bytes(), "nor written to stderr"


# --- 5. health through an engine crash and the supervisor's restart


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


# --- 6. token accounting with the real engine


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
