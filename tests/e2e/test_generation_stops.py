"""A client that leaves stops the generation in the engine, on every surface, streamed or not, with tools or not.

Proved on the engine's own state: its ``/api/ps`` counts the llama.cpp calls running (``generations``), which
drops only when llama.cpp has returned. Every request here is made long on purpose (a JSON schema that
needs a thousand numbers, so the model cannot end early), and the test waits until the engine is generating it
before hanging up, so a request that ended on its own cannot pass for a stopped one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.processes import poll
from tests.support.raw_http import post_raw

pytestmark = pytest.mark.e2e
MODEL = "smollm2:135m"
LONG = {"type": "array", "items": {"type": "integer"}, "minItems": 1000}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "record_numbers",
            "description": "Record numbers",
            "parameters": {"type": "object", "properties": {"numbers": LONG}, "required": ["numbers"]},
        },
    }
]
ASK = [{"role": "user", "content": "List the numbers from 1 to 1000."}]
OPENAI_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "numbers", "schema": {"type": "object", "properties": {"n": LONG}, "required": ["n"]}},
}


def _ollama(stream: bool, tools: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": ASK,
        "format": LONG,
        "stream": stream,
        "options": {"num_predict": 1024, "temperature": 0},
    }
    if tools:
        body["tools"] = TOOLS
    return body


def _openai(stream: bool, tools: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": ASK,
        "response_format": OPENAI_FORMAT,
        "stream": stream,
        "max_tokens": 1024,
        "temperature": 0,
    }
    if tools:
        body["tools"] = TOOLS
    return body


CASES = {
    "ollama chat streamed": ("/api/chat", _ollama(True)),
    "ollama chat": ("/api/chat", _ollama(False)),
    "ollama chat with tools": ("/api/chat", _ollama(False, tools=True)),
    "ollama chat streamed with tools": ("/api/chat", _ollama(True, tools=True)),
    "ollama generate streamed": (
        "/api/generate",
        {"model": MODEL, "prompt": "Numbers:", "format": LONG, "options": {"num_predict": 1024}},
    ),
    "ollama generate": (
        "/api/generate",
        {"model": MODEL, "prompt": "Numbers:", "format": LONG, "stream": False, "options": {"num_predict": 1024}},
    ),
    "openai chat streamed": ("/v1/chat/completions", _openai(True)),
    "openai chat": ("/v1/chat/completions", _openai(False)),
    "openai chat with tools": ("/v1/chat/completions", _openai(False, tools=True)),
    "service chat streamed": ("/api/v1/chat", _ollama(True)),
    "service chat": ("/api/v1/chat", _ollama(False)),
    "service chat completions with tools": ("/api/v1/chat/completions", _openai(False, tools=True)),
}


def _generations(http: httpx.Client) -> int:
    return int(http.get("/api/ps").json().get("generations", 0))


@pytest.fixture
def http(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=60) as client:
        poll(lambda: _generations(client) == 0, "an idle engine before the test")
        yield client


@pytest.mark.parametrize("case", list(CASES))
def test_a_client_that_leaves_stops_the_generation(case: str, http: httpx.Client, gateway_url: str) -> None:
    path, body = CASES[case]
    parts = urlsplit(gateway_url)
    conn = post_raw(parts.hostname or "127.0.0.1", parts.port or 80, path, body)
    try:
        poll(lambda: _generations(http) >= 1, f"the engine generating for {case}", limit=60)
    finally:
        conn.close()
    poll(lambda: _generations(http) == 0, f"the engine stopping {case} after its client left", limit=5.0)
    models = http.get("/api/ps").json()["models"]
    assert all(m.get("requests") == 0 for m in models), models  # the model no longer counts as in use
