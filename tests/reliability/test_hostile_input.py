"""Hostile request bodies against a served gateway and the scripted engine: each is a clear 4xx in its surface's
format (never a 500, a hang or a dropped connection), refused before the engine, and the gateway keeps serving.

Images have a module of their own (test_hostile_images.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.integration.conftest import Engine, ServedGateway
from tests.reliability.conftest import refused, still_serving
from tests.support.vision import marker, received

pytestmark = pytest.mark.reliability
Start = Callable[..., ServedGateway]
JsonDict = dict[str, Any]

MODEL = "fake"
GENERATION_PATHS = (
    "/api/chat",
    "/api/generate",
    "/v1/chat/completions",
    "/v1/completions",
    "/api/v1/chat",
    "/api/v1/generate",
    "/api/v1/chat/completions",
)
BODY_PATHS = (
    *GENERATION_PATHS,
    "/api/embed",
    "/api/embeddings",
    "/v1/embeddings",
    "/api/v1/embeddings",
    "/api/v1/vlm",
    "/api/v1/vlm/openai",
    "/api/v1/batch/chat",
    "/api/v1/batch/vlm",
    "/api/show",
    "/api/create",
    "/api/copy",
    "/api/pull",
    "/api/v1/models/create",
    "/api/v1/models/fake/copy",
    "/api/v1/models/pull",
)
"""Every POST route that reads a JSON body (the schema's POST operations, less load/unload, which take none)."""


def valid(path: str, text: str) -> JsonDict:
    """A small valid generation request for ``path`` carrying ``text`` (a marker found in the engine's record)."""
    if path.endswith("/generate") or path == "/v1/completions":
        return {"model": MODEL, "prompt": text, "stream": False}
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": False}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def with_field(path: str, text: str, field: str, raw_value: str) -> bytes:
    """A valid request for ``path`` whose ``field`` holds ``raw_value`` verbatim (JSON text)."""
    head = orjson.dumps(valid(path, text))[:-1]
    return head + b',"' + field.encode() + b'":' + raw_value.encode() + b"}"


async def test_json_nested_ten_thousand_deep_is_refused(serve_gateway: Start, engine: Engine, http: Any) -> None:
    client = http(serve_gateway())
    for path in GENERATION_PATHS:
        text = marker()
        resp = await client.post(path, content=with_field(path, text, "format", nested(10_000)))
        assert "depth" in refused(resp, path, 400, "invalid_request"), path
        assert received(engine, text) == [], path
    await still_serving(client)


async def test_json_nested_deeper_than_the_engine_call_can_carry_is_refused(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    """300 levels, in a pass-through field and in the fields that carry JSON schemas."""
    client = http(serve_gateway())
    schema = '{"type":"array","items":' * 300 + '{"type":"integer"}' + "}" * 300
    tools = f'[{{"type":"function","function":{{"name":"f","parameters":{schema}}}}}]'
    cases = [
        ("/api/chat", "extra", nested(300)),
        ("/api/chat", "format", schema),
        ("/api/chat", "tools", tools),
        ("/api/generate", "format", schema),
        ("/v1/chat/completions", "response_format", f'{{"type":"json_schema","json_schema":{{"schema":{schema}}}}}'),
        ("/api/v1/chat", "extra", nested(300)),
    ]
    for path, field, value in cases:
        text = marker()
        resp = await client.post(path, content=with_field(path, text, field, value))
        refused(resp, path, 400, "invalid_request")
        assert received(engine, text) == [], path
    await still_serving(client)


async def test_a_hundred_thousand_messages_are_refused(serve_gateway: Start, engine: Engine, http: Any) -> None:
    client = http(serve_gateway())
    text = marker()
    many = [{"role": "user", "content": text}] * 100_000
    for path in ("/api/chat", "/v1/chat/completions", "/api/v1/chat", "/api/v1/chat/completions"):
        resp = await client.post(path, json={"model": MODEL, "messages": many})
        assert "limit" in refused(resp, path, 413, "request_too_large"), path
    # Small enough for the drop-in body limit (1.5 MiB), far over the prompt limit: refused without counting.
    tiny = [{"role": "u"}] * 100_000
    resp = await client.post("/api/chat", json={"model": MODEL, "messages": tiny})
    assert "100000 messages" in refused(resp, "/api/chat", 400, "prompt_too_large")
    # The vision endpoints take 24 MiB bodies: the prompt limit still refuses 100k messages.
    resp = await client.post("/api/v1/vlm", json={"model": "fake-vision", "messages": many, "images": []})
    refused(resp, "/api/v1/vlm", 400, "prompt_too_large")
    resp = await client.post("/api/v1/batch/chat", json={"requests": [valid("/api/chat", text)] * 100_000})
    refused(resp, "/api/v1/batch/chat", 413, "request_too_large")
    assert received(engine, text) == []
    await still_serving(client)


async def test_nul_bytes_never_break_the_gateway(serve_gateway: Start, engine: Engine, http: Any) -> None:
    """A NUL is valid JSON text: in the content it is carried to the engine as it is; anywhere else (model,
    role, option names) the answer is whatever the engine says, never a 500."""
    client = http(serve_gateway())
    text = marker()
    resp = await client.post("/api/chat", json=valid("/api/chat", f"{text}\x00after"))
    assert resp.status_code == 200, resp.text
    [entry] = received(engine, text)
    assert entry["body"]["messages"][0]["content"] == f"{text}\x00after"
    bodies: list[tuple[str, JsonDict]] = [
        ("/api/chat", {**valid("/api/chat", "x"), "model": "fa\x00ke"}),
        ("/v1/chat/completions", {**valid("/v1/chat/completions", "x"), "model": "\x00"}),
        ("/api/chat", {"model": MODEL, "stream": False, "messages": [{"role": "us\x00er", "content": "x"}]}),
        ("/api/generate", {**valid("/api/generate", "x"), "options": {"\x00": 1}}),
        ("/api/embed", {"model": MODEL, "input": ["\x00" * 1000]}),
    ]
    for path, body in bodies:
        resp = await client.post(path, json=body)
        assert resp.status_code < 500, (path, resp.status_code, resp.text)
        if resp.status_code >= 400:
            refused(resp, path)
    await still_serving(client)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/chat", {"options": {"num_predict": -5}}, "options.num_predict"),
        ("/api/v1/chat", {"options": {"num_predict": -5}}, "options.num_predict"),
        ("/api/generate", {"options": {"num_ctx": 10**9}}, "options.num_ctx"),
        ("/api/v1/generate", {"options": {"num_ctx": 10**9}}, "options.num_ctx"),
        ("/v1/chat/completions", {"max_tokens": 10**12}, "max_tokens"),
        ("/api/v1/chat/completions", {"max_tokens": 10**12}, "max_tokens"),
        ("/v1/completions", {"max_tokens": 10**12}, "max_tokens"),
        ("/v1/chat/completions", {"seed": 10**30}, "seed"),
        ("/api/generate", {"context": [10**30]}, "context"),
        ("/api/chat", {"options": {"temperature": -1}}, "options.temperature"),
        ("/v1/chat/completions", {"temperature": 1e300}, "temperature"),
    ],
)
async def test_numbers_out_of_range_are_refused_naming_the_field(
    serve_gateway: Start, engine: Engine, http: Any, path: str, body: JsonDict, field: str
) -> None:
    client = http(serve_gateway())
    text = marker()
    resp = await client.post(path, content=json.dumps({**valid(path, text), **body}).encode())  # orjson: 64-bit ints
    assert field in refused(resp, path, 400, "invalid_request")
    assert received(engine, text) == []
    await still_serving(client)


async def test_non_finite_numbers_and_broken_text_are_malformed_json(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    client = http(serve_gateway())
    text = marker()
    for path in ("/api/chat", "/v1/chat/completions", "/api/v1/chat", "/api/embed"):
        for raw in ("1e309", "NaN", "-Infinity"):
            resp = await client.post(path, content=with_field(path, text, "temperature", raw))
            assert "malformed JSON" in refused(resp, path, 400, "invalid_request"), (path, raw)
        invalid_utf8 = orjson.dumps(valid(path, text)).replace(text.encode(), text.encode() + b"\xff\xfe\xc3")
        resp = await client.post(path, content=invalid_utf8)
        assert "UTF-8" in refused(resp, path, 400, "invalid_request"), path
        surrogate = orjson.dumps(valid(path, text)).replace(text.encode(), text.encode() + b"\\ud800")
        resp = await client.post(path, content=surrogate)
        refused(resp, path, 400, "invalid_request")
    assert received(engine, text) == []
    await still_serving(client)


async def test_bodies_that_are_not_json_objects_are_refused_on_every_body_route(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    client = http(serve_gateway())
    seen = len(engine.engine.received)
    for path in BODY_PATHS:
        for raw in (b"[1, 2]", b'"a string"', b"42", b"null", b"true", b""):
            resp = await client.post(path, content=raw)
            message = refused(resp, path, 400, "invalid_request")
            assert "JSON object" in message, (path, raw, message)
    assert len(engine.engine.received) == seen, "nothing reached the engine"
    await still_serving(client)


async def test_wrong_content_types_are_refused_unless_the_body_is_json(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    """The body decides, not the header: Ollama's own clients and ``curl -d`` send JSON with other content types
    (so that is served), while a form, a multipart upload or XML is a 400."""
    client = http(serve_gateway())
    text = marker()
    for path in ("/api/chat", "/v1/chat/completions", "/api/v1/chat", "/api/v1/vlm"):
        form = await client.post(path, data={"model": MODEL, "prompt": text})
        refused(form, path, 400, "invalid_request")
        upload = await client.post(path, files={"file": ("a.txt", text.encode(), "text/plain")})
        refused(upload, path, 400, "invalid_request")
        xml = await client.post(path, content=b"<chat/>", headers={"content-type": "application/xml"})
        refused(xml, path, 400, "invalid_request")
    assert received(engine, text) == []
    as_text = await client.post(
        "/api/chat", content=orjson.dumps(valid("/api/chat", text)), headers={"content-type": "text/plain"}
    )
    assert as_text.status_code == 200, as_text.text
    await still_serving(client)
