"""Keys managed live, end to end on the real engine: a key made through the admin API chats at once with the
official ``ollama`` client, and is refused at once after it is deleted."""

from __future__ import annotations

from pathlib import Path

import httpx
import ollama
import pytest

from tests.e2e.conftest import start_gateway
from tests.support.processes import stop

pytestmark = pytest.mark.e2e

CHAT_MODEL = "smollm2:135m"
HI = [{"role": "user", "content": "Say hi."}]
ADMIN = {"Authorization": "Bearer sk-root"}


def test_a_key_made_through_the_admin_api_chats_at_once_and_stops_at_once(
    model_store: Path, artifacts_dir: Path, tmp_path: Path, engine_url: str
) -> None:
    url, proc = start_gateway(
        model_store,
        tmp_path,
        artifacts_dir / "gateway-admin-tenants-e2e.log",
        env={
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": engine_url,
            "SHARED_OLLAMA_API_KEYS": "root:sk-root:admin",
        },
    )
    try:
        with httpx.Client(base_url=url, timeout=60) as admin:
            assert admin.post("/api/v1/admin/tenants", json={"name": "app"}, headers=ADMIN).status_code == 201
            made = admin.post("/api/v1/admin/tenants/app/keys", headers=ADMIN).json()
            client = ollama.Client(host=url, headers={"Authorization": f"Bearer {made['key']}"}, timeout=120)
            answer = client.chat(model=CHAT_MODEL, messages=HI, options={"num_predict": 4})
            assert answer.done and 0 < (answer.eval_count or 0) <= 4

            deleted = admin.delete(f"/api/v1/admin/tenants/app/keys/{made['id']}", headers=ADMIN)
            assert deleted.status_code == 200
            with pytest.raises(ollama.ResponseError) as refused:
                client.chat(model=CHAT_MODEL, messages=HI, options={"num_predict": 4})
            assert refused.value.status_code == 401

            audit = admin.get("/api/v1/admin/audit", headers=ADMIN).json()["entries"]
            assert [e["action"] for e in audit] == ["key.delete", "key.create", "tenant.create"]
            assert made["key"] not in str(audit)
    finally:
        stop(proc)
