"""Admission with auth against the scripted engine: API keys in either header, admin-only operations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.integration.conftest import Engine, ServedGateway, chat, project, stats

Start = Callable[..., ServedGateway]


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


async def test_health_shows_where_the_engine_runs_to_admins_only(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    gw = serve_gateway(api_keys=KEYS)
    client = http(gw)
    for headers in ({}, {"X-API-Key": "key-web"}, {"Authorization": "Bearer wrong"}):
        resp = await client.get("/api/v1/health", headers=headers)
        assert resp.status_code == 200, "health stays open for monitors, whatever the key"
        shown = resp.json()["engine"]
        assert "url" not in shown and "pid" not in shown, headers
        assert engine.url not in resp.text, headers
        assert shown["state"] == "running"
    admin = (await client.get("/api/v1/health", headers={"X-API-Key": "key-ops"})).json()["engine"]
    assert admin["url"] == engine.url
    assert "pid" in admin


async def test_health_shows_the_engine_to_everyone_with_auth_off(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    gw = serve_gateway()
    body = (await http(gw).get("/api/v1/health")).json()
    assert body["engine"]["url"] == engine.url
