"""EngineClient.count_tokens against an engine without a tokenizer endpoint (the fake one, like real Ollama)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from shared_ollama.backends.client import EngineClient, _no_such_endpoint
from shared_ollama.errors import ModelNotFound
from shared_ollama.settings import Settings
from tests.support.fake_engine import FakeEngine


@pytest.fixture
async def engine_client(fake_engine: tuple[str, FakeEngine]) -> AsyncIterator[EngineClient]:
    client = EngineClient(fake_engine[0], Settings())
    await client.open()
    try:
        yield client
    finally:
        await client.close()


def _tokenize_calls(engine: FakeEngine) -> int:
    return sum(1 for r in engine.received if r["path"] == "/api/tokenize")


async def test_fake_engine_answers_unknown_paths_as_ollama_does(fake_engine: tuple[str, FakeEngine]) -> None:
    async with httpx.AsyncClient(base_url=fake_engine[0]) as http:
        resp = await http.post("/api/tokenize", json={"model": "fake", "prompt": "hi"})
    assert resp.status_code == 404
    assert resp.text == "404 page not found"
    assert resp.headers["content-type"].startswith("text/plain")


async def test_no_tokenizer_is_none_and_remembered(
    engine_client: EngineClient, fake_engine: tuple[str, FakeEngine]
) -> None:
    engine = fake_engine[1]
    before = _tokenize_calls(engine)
    assert engine_client.has_tokenizer is None
    assert await engine_client.count_tokens("fake", {"prompt": "hello world"}) is None
    assert engine_client.has_tokenizer is False
    assert _tokenize_calls(engine) == before + 1
    assert await engine_client.count_tokens("fake", {"messages": [{"role": "user", "content": "hi"}]}) is None
    assert _tokenize_calls(engine) == before + 1, "the second call must not ask the engine again"


async def test_model_not_found_json_404_is_an_error_not_a_missing_endpoint(engine_client: EngineClient) -> None:
    with pytest.raises(ModelNotFound):
        await engine_client.count_tokens("fault-404", {"prompt": "hello"})
    assert engine_client.has_tokenizer is None


@pytest.mark.parametrize(
    ("status", "body", "missing"),
    [
        (404, b"404 page not found", True),
        (404, b"Not Found", True),
        (404, b'{"error": "404 page not found"}', True),
        (405, b"405 method not allowed", True),
        (404, b'{"error": "model \'x\' not found"}', False),
        (400, b"bad", False),
        (500, b"boom", False),
    ],
)
def test_missing_endpoint_detection(status: int, body: bytes, missing: bool) -> None:
    assert _no_such_endpoint(status, body) is missing
