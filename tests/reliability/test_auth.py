"""Auth on, against a served gateway and the scripted engine: every admin route and every model-changing path is
refused without a key (401) and with a user's key (403) before anything reaches the engine; a user reads only its
own analytics; one tenant's cached answer is never served to another.

test_admission_auth.py (integration) covers the two key headers, one admin refusal and the queue stats' view;
the ``keep_alive`` load/unload policy for user keys belongs to the tenant-policy issue, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import Engine, ServedGateway, until
from tests.reliability.conftest import refused, still_serving
from tests.support.vision import marker, received

pytestmark = pytest.mark.reliability
Start = Callable[..., ServedGateway]
JsonDict = dict[str, Any]

KEYS = "web:key-web,mobile:key-mobile,ops:key-ops:admin"
USER = {"X-API-Key": "key-web"}
OTHER_USER = {"Authorization": "Bearer key-mobile"}
ADMIN = {"X-API-Key": "key-ops"}
MODEL = "fake"
DIGEST = "sha256:" + "ab" * 32

ADMIN_ROUTES: list[tuple[str, str, JsonDict | None]] = [
    ("POST", "/api/create", {"model": "made", "from": MODEL}),
    ("POST", "/api/copy", {"source": MODEL, "destination": "copied"}),
    ("DELETE", "/api/delete", {"model": MODEL}),
    ("POST", "/api/pull", {"model": MODEL, "stream": False}),
    ("POST", f"/api/blobs/{DIGEST}", None),
    ("POST", "/api/v1/models/create", {"name": "made", "modelfile": f"FROM {MODEL}"}),
    ("POST", f"/api/v1/models/{MODEL}/copy", {"destination": "copied"}),
    ("DELETE", f"/api/v1/models/{MODEL}", None),
    ("POST", "/api/v1/models/pull", {"model": MODEL}),
    ("POST", f"/api/v1/models/{MODEL}/load", None),
    ("POST", f"/api/v1/models/{MODEL}/unload", None),
    ("DELETE", "/api/v1/cache", None),
    ("GET", "/metrics", None),
    ("GET", "/api/v1/metrics", None),
    ("GET", "/api/v1/admin/tenants", None),
    ("POST", "/api/v1/admin/tenants", {"name": "made"}),
    ("GET", "/api/v1/admin/tenants/mobile", None),
    ("PATCH", "/api/v1/admin/tenants/mobile", {"limits": {"max_inflight_text": 2}}),
    ("POST", "/api/v1/admin/tenants/mobile/keys", None),
    ("DELETE", "/api/v1/admin/tenants/mobile/keys/k1", None),
    ("DELETE", "/api/v1/admin/tenants/made", None),
    ("GET", "/api/v1/admin/audit", None),
]
"""Every route that changes models or the cache, or shows every tenant's figures (the schema's "admin" routes)."""


def _template(path: str) -> str:
    """A listed path as the schema names it (``/api/v1/models/fake/copy`` -> ``/api/v1/models/{name}/copy``)."""
    if "/v1/models/" in path:
        return path.replace(MODEL, "{name}")
    if "/v1/admin/tenants/" in path:
        parts = path.split("/")
        parts[5] = "{name}"
        if len(parts) > 7:
            parts[7] = "{key_id}"
        return "/".join(parts)
    return path.replace(DIGEST, "{digest}")


def engine_calls(engine: Engine) -> int:
    return len(engine.engine.received)


def deterministic(text: str) -> JsonDict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "stream": False,
        "options": {"temperature": 0, "num_predict": 3},
    }


async def test_every_admin_route_is_refused_without_a_key_and_with_a_user_key(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    client = http(serve_gateway(api_keys=KEYS))
    schema = (await client.get("/api/openapi.json")).json()
    admin_in_schema = {
        (method.upper(), path)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if "admin" in op.get("summary", "").lower()
    }
    listed = {(m, _template(p)) for m, p, _ in ADMIN_ROUTES}
    assert admin_in_schema <= listed, f"admin routes not covered here: {admin_in_schema - listed}"
    seen = engine_calls(engine)
    for method, path, body in ADMIN_ROUTES:
        anonymous = await client.request(method, path, json=body)
        refused(anonymous, path, 401, "unauthorized")
        wrong = await client.request(method, path, json=body, headers={"Authorization": "Bearer not-a-key"})
        refused(wrong, path, 401, "unauthorized")
        user = await client.request(method, path, json=body, headers=USER)
        assert "admin" in refused(user, path, 403, "forbidden"), (method, path)
    assert engine_calls(engine) == seen, "no refused request reached the engine"
    for method, path, body in ADMIN_ROUTES:  # the same requests pass the door with the admin key
        resp = await client.request(method, path, json=body, headers=ADMIN)
        assert resp.status_code not in (401, 403), (method, path, resp.status_code, resp.text)
    await still_serving_with(client)


async def still_serving_with(client: Any) -> None:
    """``still_serving`` with auth on: the checks run with the admin key."""
    client.headers.update(ADMIN)
    try:
        await still_serving(client)
    finally:
        for name in ADMIN:
            del client.headers[name]


async def test_a_user_reads_only_its_own_analytics(serve_gateway: Start, http: Any) -> None:
    client = http(serve_gateway(api_keys=KEYS))
    for headers, count in ((USER, 2), (OTHER_USER, 3), (ADMIN, 1)):
        for _ in range(count):
            resp = await client.post(
                "/api/generate", json={"model": MODEL, "prompt": "x", "stream": False}, headers=headers
            )
            assert resp.status_code == 200, resp.text
        bad = await client.post("/api/chat", json={"messages": []}, headers=headers)  # no model: 400, recorded
        assert bad.status_code == 400

    async def all_recorded() -> bool:
        data = (await client.get("/api/v1/analytics", params={"window": "1h"}, headers=ADMIN)).json()
        return bool(data["totals"]["requests"] == 9)

    await until(all_recorded, "nine requests in analytics")
    params = {"window": "1h", "group_by": "tenant"}
    mine = (await client.get("/api/v1/analytics", params=params, headers=USER)).json()
    assert {g["key"]: g["requests"] for g in mine["groups"]} == {"web": 3}, mine
    assert mine["totals"]["requests"] == 3
    assert {e["tenant"] for e in mine["recent_errors"]} == {"web"}, mine["recent_errors"]
    other = await client.get("/api/v1/analytics", params={**params, "tenant": "mobile"}, headers=USER)
    assert "own analytics" in refused(other, "/api/v1/analytics", 403, "forbidden")
    everyone = (await client.get("/api/v1/analytics", params=params, headers=ADMIN)).json()
    assert {g["key"]: g["requests"] for g in everyone["groups"]} == {"web": 3, "mobile": 4, "ops": 2}
    refused(await client.get("/api/v1/analytics", params=params), "/api/v1/analytics", 401, "unauthorized")


async def test_no_tenant_is_served_another_tenants_cached_answer(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    client = http(serve_gateway(api_keys=KEYS))
    native, openai = marker(), marker()
    cases = [
        ("/api/chat", native, deterministic(native)),
        (
            "/v1/chat/completions",
            openai,
            {"model": MODEL, "messages": [{"role": "user", "content": openai}], "temperature": 0, "max_tokens": 3},
        ),
    ]
    for path, text, body in cases:
        first = await client.post(path, json=body, headers=USER)
        assert first.headers["X-Shared-Ollama-Cache"] == "miss", first.headers
        again = await client.post(path, json=body, headers=USER)
        assert again.headers["X-Shared-Ollama-Cache"] == "hit", "the cache works for one tenant"
        calls = len(received(engine, text))
        for headers in (OTHER_USER, ADMIN):
            other = await client.post(path, json=body, headers=headers)
            assert other.status_code == 200, other.text
            assert other.headers["X-Shared-Ollama-Cache"] == "miss", (path, headers, other.headers)
            assert len(received(engine, text)) == calls + 1, "the other tenant's request reached the engine"
            calls += 1
    await still_serving_with(client)
