"""Contracts every endpoint keeps (DESIGN.md §2), checked against a scripted engine."""

from __future__ import annotations

import httpx
import orjson
import pytest

REQUEST_ID = "X-Shared-Ollama-Request-Id"
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


async def test_request_id_is_generated_and_a_sane_one_is_kept(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.get("/api/tags")
    assert resp.status_code == 200
    assert len(resp.headers[REQUEST_ID]) == 32
    kept = await gateway.get("/api/tags", headers={REQUEST_ID: "client-abc.1"})
    assert kept.headers[REQUEST_ID] == "client-abc.1"
    replaced = await gateway.get("/api/tags", headers={REQUEST_ID: "bad id with spaces"})
    assert replaced.headers[REQUEST_ID] != "bad id with spaces"


@pytest.mark.parametrize("path", ["/api/chat", "/api/v1/chat", "/api/generate", "/api/embed"])
async def test_malformed_json_is_invalid_request_native(gateway: httpx.AsyncClient, path: str) -> None:
    resp = await gateway.post(path, content=b'{"model": "x", ')
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == "invalid_request"
    assert isinstance(body["error"], str)
    assert body["request_id"] == resp.headers[REQUEST_ID]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/chat/completions", "/v1/embeddings"])
async def test_malformed_json_is_invalid_request_openai(gateway: httpx.AsyncClient, path: str) -> None:
    resp = await gateway.post(path, content=b"[1, 2")
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "invalid_request"
    assert err["type"] == "invalid_request_error"


async def test_schema_errors_name_the_field(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.post("/api/chat", json={"model": "m", "messages": [{"content": "no role"}]})
    assert resp.status_code == 400
    assert "messages.0.role" in resp.json()["error"]
    resp = await gateway.post("/v1/chat/completions", json={"model": "m", "messages": [], "n": 1})
    assert resp.status_code == 400


async def test_model_is_required_on_the_ollama_surface(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.post("/api/chat", json=CHAT)
    assert resp.status_code == 400
    assert resp.json()["error"] == "model is required"


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("fault-404", 404, "model_not_found"),
        ("fault-503", 503, "backend_unavailable"),
        ("fault-500", 502, "backend_error"),
    ],
)
async def test_engine_errors_are_translated(gateway: httpx.AsyncClient, model: str, status: int, code: str) -> None:
    native = await gateway.post("/api/chat", json={**CHAT, "model": model, "stream": False})
    assert native.status_code == status
    assert native.json()["code"] == code
    openai = await gateway.post("/v1/chat/completions", json={**CHAT, "model": model})
    assert openai.status_code == status
    assert openai.json()["error"]["code"] == code
    if status == 503:
        assert native.headers["Retry-After"] == openai.headers["Retry-After"] == "2"
        assert native.json()["retry_after"] == openai.json()["error"]["retry_after"] == 2.0
    else:
        assert "Retry-After" not in native.headers
        assert native.json()["retry_after"] is None


async def test_error_after_first_byte_ends_ndjson_with_one_error_line(gateway: httpx.AsyncClient) -> None:
    for model, code in (("error-midstream", "backend_error"), ("crash-midstream", "backend_unavailable")):
        resp = await gateway.post("/api/chat", json={**CHAT, "model": model})
        assert resp.status_code == 200
        lines = [orjson.loads(line) for line in resp.content.splitlines() if line]
        if model == "error-midstream":  # a crash resets the connection, which may discard lines in flight
            assert lines[0]["message"]["content"] == "tok "
        assert all(line["message"]["content"] == "tok " for line in lines[:-1])
        assert lines[-1]["code"] == code
        assert sum("error" in line for line in lines) == 1


async def test_error_after_first_byte_ends_sse_with_one_error_event(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.post("/v1/chat/completions", json={**CHAT, "model": "error-midstream", "stream": True})
    events = [e for e in resp.text.split("\n\n") if e]
    assert events[0].startswith("data: ")
    last = orjson.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "backend_error"
    assert "data: [DONE]" not in resp.text


async def test_unknown_endpoint_is_structured_404(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.get("/api/nope")
    assert resp.status_code == 404
    assert resp.json()["code"] == "not_found"
    resp = await gateway.get("/v1/nope")
    assert resp.json()["error"]["code"] == "not_found"


async def test_health_reports_external_engine(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.get("/api/v1/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "healthy"
    assert body["ollama_status"] == "running"
    assert body["engine"]["kind"] == "external"
    assert body["engine"]["version"] == "0.0.0-fake"


async def test_openai_stream_ends_with_done_and_usage(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.post(
        "/v1/chat/completions",
        json={**CHAT, "model": "fake", "stream": True, "stream_options": {"include_usage": True}},
    )
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [e.removeprefix("data: ") for e in resp.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "tok " * 8


async def test_service_api_defaults_model_and_does_not_stream(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.post("/api/v1/chat", json=CHAT)
    assert resp.status_code == 200
    body = resp.json()
    assert body["done"] is True
    assert body["model"] == "smollm2:135m"


async def test_service_embeddings_accept_prompt_and_input(gateway: httpx.AsyncClient) -> None:
    one = (await gateway.post("/api/v1/embeddings", json={"prompt": "hello"})).json()
    assert len(one["embedding"]) == 8
    many = (await gateway.post("/api/v1/embeddings", json={"input": ["a", "b"]})).json()
    assert len(many["embeddings"]) == 2
    assert "embedding" not in many
    bad = await gateway.post("/api/v1/embeddings", json={"model": "x"})
    assert bad.status_code == 400


async def test_remote_image_urls_are_refused(gateway: httpx.AsyncClient) -> None:
    content = [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/x.png"}}]
    resp = await gateway.post(
        "/v1/chat/completions", json={"model": "fake-vision", "messages": [{"role": "user", "content": content}]}
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_image"
    assert "remote image URLs are disabled" in resp.json()["error"]["message"]


async def test_swagger_ui_and_openapi(gateway: httpx.AsyncClient) -> None:
    docs = await gateway.get("/api/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    paths = (await gateway.get("/api/openapi.json")).json()["paths"]
    assert {"/api/v1/chat", "/api/chat", "/v1/chat/completions", "/v1/embeddings"} <= set(paths)
