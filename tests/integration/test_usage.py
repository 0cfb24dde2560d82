"""``GET /api/v1/usage`` against the scripted engine: who sees what (a user its own tenant, an admin every tenant),
the sums from the answers' own counts, cache hits, parameter errors, and usage reads not counted as traffic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.integration.conftest import ServedGateway, chat

Start = Callable[..., ServedGateway]
KEYS = "a:key-a,b:key-b,ops:key-ops:admin"


def key(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer key-{name}"}


async def usage(client: httpx.AsyncClient, who: str, **params: str) -> httpx.Response:
    return await client.get("/api/v1/usage", params=params, headers=key(who))


async def test_each_tenant_sees_its_own_usage_and_an_admin_sees_all(serve_gateway: Start, http: Any) -> None:
    client = http(serve_gateway(api_keys=KEYS))
    answers: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    for who, lengths in (("a", (2, 5)), ("b", (7,))):
        for n in lengths:
            resp = await client.post("/api/chat", json=chat(num_predict=n, fake_tokens=n), headers=key(who))
            assert resp.status_code == 200, resp.text
            answers[who].append(resp.json())
    cached = {**key("a"), "X-Shared-Ollama-Cache": "exact"}
    miss = await client.post("/api/chat", json=chat(num_predict=1), headers=cached)
    hit = await client.post("/api/chat", json=chat(num_predict=1), headers=cached)
    assert (miss.headers["X-Shared-Ollama-Cache"], hit.headers["X-Shared-Ollama-Cache"]) == ("miss", "hit")
    answers["a"].append(miss.json())  # the hit: one more request, no more tokens nor engine time

    own = await usage(client, "a", window="1h")
    assert own.status_code == 200, own.text
    body = own.json()
    assert body["tenant"] == "a", "a user's view is its own tenant"
    prompt = sum(a["prompt_eval_count"] for a in answers["a"])
    completion = sum(a["eval_count"] for a in answers["a"])
    assert body["rows"] == [
        {
            "tenant": "a",
            "requests": 4,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "engine_seconds": body["rows"][0]["engine_seconds"],
        }
    ]
    assert body["totals"]["requests"] == 4
    engine_time = sum(a.get("total_duration", 0) for a in answers["a"]) / 1e9  # the engine's own; a hit adds none
    assert body["rows"][0]["engine_seconds"] == round(engine_time, 3)
    forbidden = await usage(client, "a", tenant="b")
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"

    everyone = (await usage(client, "ops", group_by="tenant,model", bucket="hour")).json()
    assert {(r["tenant"], r["model"]): r["requests"] for r in everyone["rows"]} == {("a", "fake"): 4, ("b", "fake"): 1}
    assert all(r["bucket"].endswith(":00:00Z") for r in everyone["rows"])
    only_b = (await usage(client, "ops", tenant="b")).json()
    assert only_b["totals"]["total_tokens"] == 3 + 7

    again = (await usage(client, "ops")).json()
    assert again["totals"] == everyone["totals"], "reading usage is not usage (nor traffic)"


async def test_bad_parameters_are_400_naming_them(serve_gateway: Start, http: Any) -> None:
    client = http(serve_gateway())
    for params, name in (
        ({"window": "1y"}, "window"),
        ({"group_by": "route"}, "group_by"),
        ({"bucket": "week"}, "bucket"),
    ):
        resp = await client.get("/api/v1/usage", params=params)
        assert resp.status_code == 400, resp.text
        assert resp.json()["code"] == "invalid_request" and name in resp.json()["error"]
    assert (await client.get("/api/v1/usage")).json()["rows"] == []
