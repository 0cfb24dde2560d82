"""``/api/push`` on the Ollama surface: a structured 501, never a 404 or a silent success (nothing is published)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration


async def test_push_is_a_structured_not_implemented(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.post("/api/push", json={"model": "smollm2:135m", "stream": False})
    assert resp.status_code == 501
    body = resp.json()
    assert body["code"] == "not_implemented"
    assert "never publishes models" in body["error"]
    assert body["request_id"] == resp.headers["X-Shared-Ollama-Request-Id"]
    assert "Retry-After" not in resp.headers, "retrying will not help"
