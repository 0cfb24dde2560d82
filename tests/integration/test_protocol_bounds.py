"""Numbers out of range are 400s that name the field, before anything reaches the engine."""

from __future__ import annotations

import httpx

from tests.support.fake_engine import FakeEngine

HI = [{"role": "user", "content": "hi"}]


def generations(engine: FakeEngine) -> int:
    return sum(1 for r in engine.received if r["path"] in ("/api/chat", "/api/generate"))


async def test_huge_numbers_are_refused_naming_the_field(
    gateway: httpx.AsyncClient, fake_engine: tuple[str, FakeEngine]
) -> None:
    engine = fake_engine[1]
    seen = generations(engine)

    resp = await gateway.post(
        "/v1/chat/completions", json={"model": "fake", "messages": HI, "max_completion_tokens": 10**12}
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_request"
    assert "max_completion_tokens" in error["message"]
    assert error["param"] == "max_completion_tokens"

    resp = await gateway.post("/api/chat", json={"model": "fake", "messages": HI, "options": {"num_ctx": 10**9}})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["code"] == "invalid_request"
    assert "options.num_ctx" in body["error"]

    assert generations(engine) == seen, "refused before the engine"
    ok = await gateway.post(
        "/api/chat", json={"model": "fake", "messages": HI, "stream": False, "options": {"num_ctx": 2048}}
    )
    assert ok.status_code == 200
