"""Observability with real gateway processes: analytics that survive a restart and stay per tenant, and metrics
that only admins read.

The gateways run against the scripted engine in a process of its own (the ``process_engine`` and ``gateways``
fixtures of ``tests/integration/conftest.py``): these tests are about the gateway's accounting, not about generation.
Every wait is bounded polling; every process started here is stopped.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.observability import (
    CHAT_ROUTE,
    Gateways,
    JsonDict,
    analytics,
    bearer,
    fake_chat,
    groups_by_key,
    project,
    until,
)
from tests.support.processes import stop

pytestmark = pytest.mark.integration  # the scripted engine, not the real one


# --- analytics survive a restart


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
    # After uvicorn's graceful shutdown the gateway ends with 0 (logs.flush_on_stop_signals); -15 would mean the
    # re-raised SIGTERM skipped the exit handlers, -9 that stop() gave up.
    assert proc.returncode == 0, proc.returncode
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


# --- a tenant reads only its own analytics; metrics are for admins


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
