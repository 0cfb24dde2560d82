"""The admin API for tenants and keys against the scripted engine: validation, 403/404/409, keys shown once,
changes in force at once and kept across a restart, configured tenants and keys overridden but never rewritten,
and the audit log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import ServedGateway, chat

Start = Callable[..., ServedGateway]
ADMIN = {"X-API-Key": "key-ops"}
USER = {"X-API-Key": "key-web"}
KEYS = "ops:key-ops:admin,web:key-web"
TENANTS = "/api/v1/admin/tenants"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _chat_as(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.post("/api/chat", json=chat(), headers=bearer(key))


async def test_only_admins_manage_tenants(serve_gateway: Start, http: Any) -> None:
    client = http(serve_gateway(api_keys=KEYS))
    for method, path in (
        ("GET", TENANTS),
        ("POST", TENANTS),
        ("GET", f"{TENANTS}/web"),
        ("PATCH", f"{TENANTS}/web"),
        ("DELETE", f"{TENANTS}/web"),
        ("POST", f"{TENANTS}/web/keys"),
        ("DELETE", f"{TENANTS}/web/keys/abc"),
        ("GET", "/api/v1/admin/audit"),
    ):
        body = {"name": "x"} if method in ("POST", "PATCH") else None
        user = await client.request(method, path, json=body, headers=USER)
        assert user.status_code == 403, (method, path, user.text)
        assert user.json()["code"] == "forbidden"
        anonymous = await client.request(method, path, json=body)
        assert anonymous.status_code == 401, (method, path)
    assert (await _chat_as(client, "key-web")).status_code == 200, "the refused calls changed nothing"
    assert (await client.get(f"{TENANTS}/web", headers=ADMIN)).status_code == 200


async def test_bad_bodies_unknown_and_existing_tenants(serve_gateway: Start, http: Any) -> None:
    client = http(serve_gateway(api_keys=KEYS))
    for body, field in (
        ({"name": "app", "limits": {"max_inflight_text": 0}}, "limits.max_inflight_text"),
        ({"name": "app", "bogus": 1}, "bogus"),
        ({"name": "app", "role": "owner"}, "role"),
        ({"name": "app", "keys": ["secret"]}, "keys"),
        ({"name": "no spaces"}, "name"),
        ({"role": "user"}, "name"),
    ):
        resp = await client.post(TENANTS, json=body, headers=ADMIN)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["code"] == "invalid_request"
        assert field in resp.json()["error"], (field, resp.json()["error"])
    not_object = await client.post(TENANTS, content=b"[1]", headers={**ADMIN, "Content-Type": "application/json"})
    assert not_object.status_code == 400

    for name in ("web", "ops"):
        taken = await client.post(TENANTS, json={"name": name}, headers=ADMIN)
        assert taken.status_code == 409, taken.text
        assert taken.json()["code"] == "conflict" and name in taken.json()["error"]

    for method, path in (
        ("GET", f"{TENANTS}/nobody"),
        ("PATCH", f"{TENANTS}/nobody"),
        ("DELETE", f"{TENANTS}/nobody"),
        ("POST", f"{TENANTS}/nobody/keys"),
        ("DELETE", f"{TENANTS}/web/keys/000000000000"),
    ):
        resp = await client.request(method, path, json={} if method == "PATCH" else None, headers=ADMIN)
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["code"] == "not_found"

    renamed = await client.patch(f"{TENANTS}/web", json={"name": "other"}, headers=ADMIN)
    assert renamed.status_code == 400 and "name" in renamed.json()["error"]
    bad_patch = await client.patch(f"{TENANTS}/web", json={"limits": {"max_prompt_tokens": "lots"}}, headers=ADMIN)
    assert bad_patch.status_code == 400 and "limits.max_prompt_tokens" in bad_patch.json()["error"]
    assert (await client.get(f"{TENANTS}/web", headers=ADMIN)).json()["limits"]["max_prompt_tokens"] is None


async def test_a_key_is_shown_once_works_at_once_and_stops_at_once(serve_gateway: Start, http: Any) -> None:
    client = http(serve_gateway(api_keys=KEYS))
    created = await client.post(TENANTS, json={"name": "app", "limits": {"max_inflight_text": 2}}, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "api" and created.json()["keys"] == []

    made = await client.post(f"{TENANTS}/app/keys", headers=ADMIN)
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["id"]
    assert key.startswith("so-") and len(key) >= 40

    answer = await _chat_as(client, key)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Shared-Ollama-Tenant"] == "app"
    assert answer.headers["X-Shared-Ollama-Inflight-Limit"] == "2", "the tenant's limits are in force"

    shown = await client.get(f"{TENANTS}/app", headers=ADMIN)
    listed = await client.get(TENANTS, headers=ADMIN)
    for resp in (shown, listed):
        assert key not in resp.text, "a key is shown only when it is made"
    assert shown.json()["keys"] == [
        {"id": key_id, "prefix": key[:10], "source": "api", "created_at": made.json()["created_at"]}
    ]
    assert {t["name"] for t in listed.json()["tenants"]} == {"ops", "web", "app"}

    deleted = await client.delete(f"{TENANTS}/app/keys/{key_id}", headers=ADMIN)
    assert deleted.status_code == 200, deleted.text
    refused = await _chat_as(client, key)
    assert refused.status_code == 401, "a deleted key is refused from the next request on"
    assert (await client.delete(f"{TENANTS}/app/keys/{key_id}", headers=ADMIN)).status_code == 404


async def test_a_patch_is_in_force_at_once_and_null_restores_the_default(serve_gateway: Start, http: Any) -> None:
    client = http(serve_gateway(api_keys=KEYS, max_inflight_text=6))
    assert (await _chat_as(client, "key-web")).headers["X-Shared-Ollama-Inflight-Limit"] == "6"
    patched = await client.patch(f"{TENANTS}/web", json={"limits": {"max_inflight_text": 1}}, headers=ADMIN)
    assert patched.status_code == 200, patched.text
    assert patched.json()["limits_in_force"]["max_inflight_text"] == 1
    assert patched.json()["source"] == "api" and patched.json()["in_config"]
    assert (await _chat_as(client, "key-web")).headers["X-Shared-Ollama-Inflight-Limit"] == "1"
    restored = await client.patch(f"{TENANTS}/web", json={"limits": {"max_inflight_text": None}}, headers=ADMIN)
    assert restored.json()["limits_in_force"]["max_inflight_text"] == 6
    assert (await _chat_as(client, "key-web")).headers["X-Shared-Ollama-Inflight-Limit"] == "6"


async def test_changes_are_kept_and_the_file_is_never_rewritten(
    serve_gateway: Start, http: Any, tmp_path: Path
) -> None:
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(
        "tenants:\n  - {name: ops, role: admin, keys: [key-ops]}\n  - {name: web, keys: [key-web, key-web-2]}\n"
    )
    before = tenants_file.read_bytes()
    first = serve_gateway(tenants_file=tenants_file)
    client = http(first)
    assert (await client.post(TENANTS, json={"name": "app"}, headers=ADMIN)).status_code == 201
    key = (await client.post(f"{TENANTS}/app/keys", headers=ADMIN)).json()["key"]
    web = (await client.get(f"{TENANTS}/web", headers=ADMIN)).json()
    assert [k["source"] for k in web["keys"]] == ["config", "config"]
    assert "key-web" not in str(web["keys"]), "configured keys are shown by id and prefix only"
    revoked_id = web["keys"][1]["id"]
    assert (await client.delete(f"{TENANTS}/web/keys/{revoked_id}", headers=ADMIN)).status_code == 200
    assert (await _chat_as(client, "key-web-2")).status_code == 401, "a configured key revoked at once"
    assert (await _chat_as(client, "key-web")).status_code == 200
    first.__exit__()

    second = http(serve_gateway(tenants_file=tenants_file))
    assert (await _chat_as(second, key)).status_code == 200, "a key made through the API survives a restart"
    assert (await _chat_as(second, "key-web-2")).status_code == 401, "so does a revocation"
    assert (await second.delete(f"{TENANTS}/web", headers=ADMIN)).status_code == 200
    assert (await _chat_as(second, "key-web")).status_code == 401, "a deleted tenant's keys stop at once"
    assert (await second.get(f"{TENANTS}/web", headers=ADMIN)).status_code == 404
    recreated = await second.post(TENANTS, json={"name": "web"}, headers=ADMIN)
    assert recreated.status_code == 201 and recreated.json()["keys"] == [], "its configured keys stay revoked"
    assert (await _chat_as(second, "key-web")).status_code == 401
    assert tenants_file.read_bytes() == before, "the tenants file is never rewritten"


async def test_no_change_may_leave_the_service_without_an_admin_key(serve_gateway: Start, http: Any) -> None:
    client = http(serve_gateway())  # auth off: everyone is an admin
    assert (await client.post(TENANTS, json={"name": "app"}, headers={})).status_code == 201
    user_first = await client.post(f"{TENANTS}/app/keys")
    assert user_first.status_code == 409, "a first key that is not an admin's would lock out the admin API"
    assert (await client.get("/api/v1/queue/stats")).json()["auth"] == "off"
    assert (await client.post(TENANTS, json={"name": "root", "role": "admin"})).status_code == 201
    admin_key = (await client.post(f"{TENANTS}/root/keys")).json()["key"]
    assert (await client.get(TENANTS)).status_code == 401, "the first key turns auth on at once"
    admin = bearer(admin_key)
    assert (await client.get(TENANTS, headers=admin)).json()["auth"] == "on"
    for method, path, body in (
        ("DELETE", f"{TENANTS}/root", None),
        ("PATCH", f"{TENANTS}/root", {"role": "user"}),
    ):
        resp = await client.request(method, path, json=body, headers=admin)
        assert resp.status_code == 409, (method, path, resp.text)
    root_key_id = (await client.get(f"{TENANTS}/root", headers=admin)).json()["keys"][0]["id"]
    last = await client.delete(f"{TENANTS}/root/keys/{root_key_id}", headers=admin)
    assert last.status_code == 409, "deleting the last key would turn auth off"
    assert (await client.get(TENANTS, headers=admin)).status_code == 200


async def test_every_admin_action_is_audited_without_keys(serve_gateway: Start, http: Any) -> None:
    client = http(serve_gateway(api_keys=KEYS))
    assert (await client.post(TENANTS, json={"name": "app"}, headers=ADMIN)).status_code == 201
    made = (await client.post(f"{TENANTS}/app/keys", headers=ADMIN)).json()
    patch = {"limits": {"max_prompt_tokens": 100}}
    assert (await client.patch(f"{TENANTS}/app", json=patch, headers=ADMIN)).status_code == 200
    assert (await client.delete(f"{TENANTS}/app/keys/{made['id']}", headers=ADMIN)).status_code == 200
    assert (await client.delete(f"{TENANTS}/app", headers=ADMIN)).status_code == 200
    assert (await client.post(TENANTS, json={"name": "ops"}, headers=ADMIN)).status_code == 409

    resp = await client.get("/api/v1/admin/audit", headers=ADMIN)
    assert resp.status_code == 200
    assert made["key"] not in resp.text, "the audit log never holds a key"
    entries = resp.json()["entries"]
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("ops", "tenant.delete", "app"),
        ("ops", "key.delete", f"app/{made['id']}"),
        ("ops", "tenant.update", "app"),
        ("ops", "key.create", f"app/{made['id']}"),
        ("ops", "tenant.create", "app"),
    ], "newest first; a refused change is not an action"
    assert entries[2]["detail"] == patch
    assert all(e["time"].endswith("Z") and e["request_id"] for e in entries)
    only = (await client.get("/api/v1/admin/audit", params={"action": "key.create"}, headers=ADMIN)).json()
    assert [e["action"] for e in only["entries"]] == ["key.create"]
    bad = await client.get("/api/v1/admin/audit", params={"limit": 0}, headers=ADMIN)
    assert bad.status_code == 400 and "limit" in bad.json()["error"]
    metrics = (await client.get("/metrics", headers=ADMIN)).text
    assert 'route="/api/v1/admin' not in metrics, "admin actions are audited, not counted as traffic"
