"""Pulls through the gateway: a failed non-streamed pull is an error (never a 200), and a pull whose client
leaves is abandoned at the engine."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson

from tests.integration.conftest import Engine, ServedGateway, until
from tests.support.raw_http import post_raw

Start = Callable[..., ServedGateway]


async def test_a_failed_non_streamed_pull_is_an_error_not_a_200(gateway: httpx.AsyncClient) -> None:
    failed = await gateway.post("/api/pull", json={"model": "pull-error", "stream": False})
    assert failed.status_code == 404
    assert failed.json()["code"] == "model_not_found"
    assert "file does not exist" in failed.json()["error"]
    service = await gateway.post("/api/v1/models/pull", json={"name": "pull-error", "stream": False})
    assert service.status_code == 404
    ok = await gateway.post("/api/pull", json={"model": "fine", "stream": False})
    assert (ok.status_code, ok.json()) == (200, {"status": "success"})


async def test_a_streamed_pull_failure_ends_with_one_error_line(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.post("/api/pull", json={"model": "pull-error"})
    lines = [orjson.loads(line) for line in resp.content.splitlines() if line]
    assert lines[0] == {"status": "pulling manifest"}
    assert "file does not exist" in lines[-1]["error"] and len(lines) == 2


async def test_a_non_streamed_pull_whose_client_leaves_is_abandoned(serve_gateway: Start, engine: Engine) -> None:
    gw = serve_gateway()
    before = engine.engine.pulls_abandoned
    conn = post_raw("127.0.0.1", gw.port, "/api/pull", {"model": "pull-hold", "stream": False})
    try:

        async def held() -> bool:
            return engine.engine.pulls_held >= 1

        await until(held, "the pull reaching the engine")
    finally:
        conn.close()

    async def abandoned() -> bool:
        return engine.engine.pulls_abandoned > before and engine.engine.pulls_held == 0

    await until(abandoned, "the engine's pull abandoned after the client left")
