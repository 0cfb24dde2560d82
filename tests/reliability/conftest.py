"""The standing reliability suite (issue 10): the promises of DESIGN.md §2 held under faults.

Reuses the integration fixtures (the scripted engine, gateways in process) and the end-to-end ones (the
session's model store with the offline models) and makes them visible to ``tests/reliability``. Adds the two
checks the modules end with: a refusal is a clear 4xx in its surface's format, and the gateway still serves.
Every module here is marked ``reliability``; the ones with the real engine are marked ``e2e`` as well.
"""

from __future__ import annotations

from typing import Any

import httpx

from shared_ollama.api.surfaces import OPENAI, surface_of
from tests.e2e.conftest import model_store
from tests.integration.conftest import (
    assert_drained,
    chat,
    engine,
    fake_engine,
    http,
    http_client_options,
    serve_gateway,
)

__all__ = ["engine", "fake_engine", "http", "http_client_options", "model_store", "serve_gateway"]


REQUEST_ID = "X-Shared-Ollama-Request-Id"
JsonDict = dict[str, Any]


def refused(resp: httpx.Response, path: str, status: int | None = None, code: str | None = None) -> str:
    """Assert ``resp`` is a clear 4xx in the error format of ``path``'s surface (DESIGN.md §2), optionally with
    ``status`` and ``code``; returns the error message."""
    assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text[:300])
    if status is not None:
        assert resp.status_code == status, (path, resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/json"), (path, resp.headers["content-type"])
    body = resp.json()
    if surface_of(path) == OPENAI:
        error = body["error"]
        assert isinstance(error, dict), (path, body)
        assert {"message", "type", "code", "param"} <= set(error), (path, body)
        message, got = error["message"], error["code"]
    else:
        assert {"error", "code", "retry_after", "request_id"} <= set(body), (path, body)
        assert body["request_id"] == resp.headers[REQUEST_ID], (path, body)
        message, got = body["error"], body["code"]
    assert isinstance(message, str) and message, (path, body)
    if code is not None:
        assert got == code, (path, body)
    return message


async def still_serving(client: httpx.AsyncClient) -> None:
    """The gateway keeps answering: health is 200, a plain chat is answered, and every counter is back at zero."""
    health = await client.get("/api/v1/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "healthy", health.text
    resp = await client.post("/api/chat", json=chat())
    assert resp.status_code == 200, resp.text
    await assert_drained(client)
