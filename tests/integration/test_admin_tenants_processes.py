"""Tenants managed live in gateway processes against the scripted engine: two replicas sharing a real
redis-server (each with its own data dir), and SIGHUP reloading the tenants file."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import redis

from shared_ollama.service.admission.tenant_db import KEYS_KEY, SPECS_KEY, VERSION_KEY
from tests.support.observability import Gateways, bearer, fake_chat, until

ADMIN = {"X-API-Key": "key-ops"}
TENANTS = "/api/v1/admin/tenants"


def _chat(client: httpx.Client, key: str) -> int:
    return client.post("/api/chat", json=fake_chat(), headers=bearer(key)).status_code


def _forget_shared_tenants(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as raw:
        raw.delete(VERSION_KEY, SPECS_KEY, KEYS_KEY)


def test_replicas_share_tenants_and_keys_through_redis(gateways: Gateways, redis_url: str, tmp_path: Path) -> None:
    _forget_shared_tenants(redis_url)
    env = {"SHARED_OLLAMA_REDIS_URL": redis_url, "SHARED_OLLAMA_API_KEYS": "ops:key-ops:admin"}
    a_url, _ = gateways.start(tmp_path / "a", "tenants-replica-a", **env)
    b_url, _ = gateways.start(tmp_path / "b", "tenants-replica-b", **env)
    with httpx.Client(base_url=a_url, timeout=30) as a, httpx.Client(base_url=b_url, timeout=30) as b:
        assert a.post(TENANTS, json={"name": "app"}, headers=ADMIN).status_code == 201
        made = a.post(f"{TENANTS}/app/keys", headers=ADMIN).json()
        assert _chat(b, made["key"]) == 200, "a key made on one replica works on the other at once"
        assert b.post(TENANTS, json={"name": "app"}, headers=ADMIN).status_code == 409

        patched = b.patch(f"{TENANTS}/app", json={"limits": {"max_inflight_text": 2}}, headers=ADMIN)
        assert patched.status_code == 200
        answer = a.post("/api/chat", json=fake_chat(), headers=bearer(made["key"]))
        assert answer.headers["X-Shared-Ollama-Inflight-Limit"] == "2", "a change on B is in force on A at once"

        # Redis loses its data (a restart without persistence): the replicas seed it again from their copies.
        _forget_shared_tenants(redis_url)
        assert _chat(b, made["key"]) == 200
        assert _chat(a, made["key"]) == 200

        assert a.delete(f"{TENANTS}/app/keys/{made['id']}", headers=ADMIN).status_code == 200
        assert _chat(b, made["key"]) == 401, "a key deleted on one replica is refused by the other at once"
        assert b.delete(f"{TENANTS}/app", headers=ADMIN).status_code == 200
        assert a.get(f"{TENANTS}/app", headers=ADMIN).status_code == 404
    for data_dir in (tmp_path / "a", tmp_path / "b"):
        assert (data_dir / "tenants.sqlite3").is_file(), "each replica keeps its own copy"


def test_sighup_reloads_the_tenants_file_and_a_bad_one_changes_nothing(gateways: Gateways, tmp_path: Path) -> None:
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text("tenants:\n  - {name: ops, role: admin, keys: [key-ops]}\n")
    url, proc = gateways.start(tmp_path / "data", "tenants-sighup", SHARED_OLLAMA_TENANTS_FILE=str(tenants_file))
    with httpx.Client(base_url=url, timeout=30) as client:
        assert _chat(client, "key-new") == 401

        tenants_file.write_text(tenants_file.read_text() + "  - {name: new, keys: [key-new]}\n")
        proc.send_signal(signal.SIGHUP)
        until(lambda: _chat(client, "key-new") == 200, "the new tenant in force after SIGHUP")

        def reloads() -> list[bool]:
            entries = client.get("/api/v1/admin/audit", params={"action": "config.reload"}, headers=ADMIN).json()
            return [entry["detail"]["ok"] for entry in entries["entries"]]

        tenants_file.write_text("tenants: [{name: new, bogus: true}]\n")
        proc.send_signal(signal.SIGHUP)
        until(lambda: reloads() == [False, True], "the bad file's reload audited as failed")
        assert proc.poll() is None, "SIGHUP does not stop the service"
        assert _chat(client, "key-new") == 200, "the tenants in force stay"
        assert client.get(TENANTS, headers=ADMIN).status_code == 200
