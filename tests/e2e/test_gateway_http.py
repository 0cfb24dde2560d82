"""The service API and the error contracts over plain HTTP, against the real engine."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.support.processes import poll

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "Capital of France?"}]
NUMBERS = [{"role": "user", "content": "List the numbers from 1 to 1000."}]
LONG = {"type": "array", "items": {"type": "integer"}, "minItems": 1000}  # an answer that cannot end early


@pytest.fixture(scope="module")
def http(gateway_url: str) -> httpx.Client:
    with httpx.Client(base_url=gateway_url, timeout=120) as client:
        yield client


def test_health(http: httpx.Client) -> None:
    resp = http.get("/api/v1/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "healthy"
    assert body["ollama_status"] == "running"
    assert body["engine"]["kind"] == "embedded"
    assert body["engine"]["managed"] is True
    assert resp.headers["X-Shared-Ollama-Request-Id"]


def test_service_chat_is_the_readme_example(http: httpx.Client) -> None:
    resp = http.post(
        "/api/v1/chat", json={"model": "smollm2:135m", "messages": QUESTION, "options": {"num_predict": 64}}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["message"]["content"].strip()
    assert body["done"] is True


def test_service_generate_chat_completions_and_embeddings(http: httpx.Client) -> None:
    gen = http.post("/api/v1/generate", json={"prompt": "The sky is", "options": {"num_predict": 6}}).json()
    assert gen["response"]
    oai = http.post("/api/v1/chat/completions", json={"model": "smollm2:135m", "messages": QUESTION, "max_tokens": 8})
    assert oai.json()["object"] == "chat.completion"
    emb = http.post("/api/v1/embeddings", json={"model": "all-minilm", "prompt": "What is machine learning?"}).json()
    assert len(emb["embedding"]) == 384
    models = http.get("/api/v1/models").json()
    assert any(m["name"] == "smollm2:135m" for m in models["models"])


def test_service_chat_streams_when_asked(http: httpx.Client) -> None:
    with http.stream(
        "POST", "/api/v1/chat", json={"messages": QUESTION, "stream": True, "options": {"num_predict": 8}}
    ) as resp:
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        lines = [orjson.loads(line) for line in resp.iter_lines() if line]
    assert lines[-1]["done"] is True
    assert lines[-1]["eval_count"] <= 8


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"model": "nope:1b", "messages": QUESTION, "stream": False}),
        ("/api/v1/chat", {"model": "nope:1b", "messages": QUESTION}),
        ("/api/embed", {"model": "nope:1b", "input": "x"}),
    ],
)
def test_unknown_model_native_format(http: httpx.Client, path: str, body: dict[str, object]) -> None:
    resp = http.post(path, json=body)
    assert resp.status_code == 404
    err = resp.json()
    assert err["code"] == "model_not_found"
    assert err["error"] == "model 'nope:1b' not found"
    assert err["request_id"] == resp.headers["X-Shared-Ollama-Request-Id"]


def test_unknown_model_streaming_is_a_plain_404(http: httpx.Client) -> None:
    resp = http.post("/api/chat", json={"model": "nope:1b", "messages": QUESTION})
    assert resp.status_code == 404
    assert resp.json()["code"] == "model_not_found"


def test_unknown_model_openai_format(http: httpx.Client) -> None:
    resp = http.post("/v1/chat/completions", json={"model": "nope:1b", "messages": QUESTION, "stream": True})
    assert resp.status_code == 404
    err = resp.json()["error"]
    assert err["code"] == "model_not_found"
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/api/chat", "/api/v1/chat", "/v1/chat/completions", "/v1/embeddings"])
def test_malformed_json(http: httpx.Client, path: str) -> None:
    resp = http.post(
        path, content=b'{"model": "smollm2:135m", "messages": [', headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    body = resp.json()
    code = body["error"]["code"] if path.startswith("/v1/") else body["code"]
    assert code == "invalid_request"


def _generations(http: httpx.Client) -> int:
    """The llama.cpp calls running in the engine (its ``/api/ps``, which the gateway passes through)."""
    return int(http.get("/api/ps").json()["generations"])


def _slots_in_use(http: httpx.Client) -> int:
    return int(http.get("/api/v1/queue/stats").json()["engine_slots"]["in_use"])


def test_abandoned_stream_leaves_the_service_usable(http: httpx.Client, gateway_url: str) -> None:
    """Streams left after their first line, one after another: each stops its generation in the engine and gives
    its engine slot back, and the service then answers. (tests/e2e/test_generation_stops.py hangs up on every
    surface before reading anything; this one hangs up mid-stream, repeatedly.) The answers are long on purpose
    (a schema that needs a thousand numbers), so none can end on its own before the check."""
    poll(lambda: _generations(http) == 0, "an idle engine before the test")
    body = {"model": "smollm2:135m", "messages": NUMBERS, "format": LONG, "options": {"num_predict": 1024}}
    for attempt in range(3):
        with httpx.Client(base_url=gateway_url, timeout=120) as own, own.stream("POST", "/api/chat", json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            first = next(lines)
            assert orjson.loads(first)["done"] is False
            try:
                poll(lambda: _generations(http) >= 1, f"the engine generating stream {attempt}", limit=60)
            except AssertionError as exc:  # say how the stream ended and what the engine shows, to know why
                rest = list(lines)
                shown = http.get("/api/ps").json()
                raise AssertionError(f"{exc}; {len(rest)} more lines, the last {rest[-1:]}; {shown}") from None
        poll(lambda: _generations(http) == 0, f"the engine stopping stream {attempt} after its client left", limit=5.0)
        poll(lambda: _slots_in_use(http) == 0, f"stream {attempt}'s engine slot given back", limit=5.0)
    resp = http.post("/api/v1/chat", json={"messages": QUESTION, "options": {"num_predict": 4}})
    assert resp.status_code == 200
    assert resp.json()["done"] is True
