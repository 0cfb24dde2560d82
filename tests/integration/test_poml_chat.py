"""``POST /api/v1/chat`` with a POML template: the rendered chat reaches the engine (the scripted one records what
it receives), and every way of getting the fields wrong is a 400 that names the field, with nothing sent on;
templates turned off are a 501; a tenant's second template while its first is pending is a 429."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from shared_ollama.app import create_app
from shared_ollama.settings import Settings
from tests.support.fake_engine import FakeEngine

TEMPLATE = """<poml>
  <system-msg>You answer in one word.</system-msg>
  <human-msg>Which colour is {{ thing }}? (question {{ tag }})</human-msg>
  <output-schema>{"type": "object", "properties": {"colour": {"type": "string"}}}</output-schema>
  <runtime temperature="0" max-tokens="8" />
</poml>"""


@asynccontextmanager
async def gateway_with(url: str, tmp_path: Path, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(engine="external", ollama_url=url, data_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client:
            yield client


def received(engine: FakeEngine, tag: str) -> list[dict[str, Any]]:
    """The chat bodies the engine received that carry ``tag`` in a message."""
    return [
        r["body"]
        for r in engine.received
        if r["path"] == "/api/chat" and any(tag in str(m.get("content")) for m in r["body"].get("messages", []))
    ]


@pytest.mark.usefixtures("poml_isolation")
async def test_a_template_is_rendered_and_sent_as_a_native_chat(
    fake_engine: tuple[str, FakeEngine], tmp_path: Path
) -> None:
    url, engine = fake_engine
    tag = uuid.uuid4().hex
    async with gateway_with(url, tmp_path) as client:
        resp = await client.post(
            "/api/v1/chat",
            json={
                "model": "fake",
                "poml": TEMPLATE,
                "context": {"thing": "the sky", "tag": tag},
                "options": {"seed": 7},
            },
        )
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["done"] is True and answer["message"]["role"] == "assistant"
    [body] = received(engine, tag)
    assert body["messages"] == [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": f"Which colour is the sky? (question {tag})"},
    ]
    assert body["format"] == {"type": "object", "properties": {"colour": {"type": "string"}}}
    assert body["options"]["temperature"] == 0 and body["options"]["num_predict"] == 8
    assert body["options"]["seed"] == 7
    assert "poml" not in body and "context" not in body


@pytest.mark.usefixtures("poml_isolation")
async def test_a_streamed_template_chat_streams(
    gateway: httpx.AsyncClient, fake_engine: tuple[str, FakeEngine]
) -> None:
    _, engine = fake_engine
    tag = uuid.uuid4().hex
    markup = "<poml><human-msg>Hello {{ who }}</human-msg></poml>"
    async with gateway.stream(
        "POST", "/api/v1/chat", json={"model": "fake", "poml": markup, "context": {"who": tag}, "stream": True}
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        chunks = [orjson.loads(line) async for line in resp.aiter_lines() if line]
    assert chunks[-1]["done"] is True and len(chunks) > 1
    [body] = received(engine, tag)
    assert body["messages"] == [{"role": "user", "content": f"Hello {tag}"}]


@pytest.mark.usefixtures("poml_isolation")
async def test_a_bad_template_is_a_400_with_the_renderers_message(
    gateway: httpx.AsyncClient, fake_engine: tuple[str, FakeEngine]
) -> None:
    _, engine = fake_engine
    before = len(engine.received)
    resp = await gateway.post(
        "/api/v1/chat", json={"model": "fake", "poml": "<poml><human-msg>Hi {{ nobody }}</human-msg></poml>"}
    )
    assert resp.status_code == 400
    error = resp.json()
    assert error["code"] == "invalid_request"
    assert error["error"] == "the poml template could not be rendered: nobody is not defined (at line 1, column 21)"
    assert error["request_id"]
    assert len(engine.received) == before


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"messages": [{"role": "user", "content": "hi"}], "context": {"a": 1}}, "context"),
        ({"poml": "<poml>x</poml>", "messages": [{"role": "user", "content": "hi"}]}, "poml"),
        ({"poml": 12}, "poml"),
        ({"poml": "<poml>x</poml>", "context": ["a"]}, "context"),
        ({"poml": "<poml>" + "x" * 70000 + "</poml>"}, "poml"),
    ],
)
async def test_misused_fields_are_refused_before_rendering(
    gateway: httpx.AsyncClient, fake_engine: tuple[str, FakeEngine], body: dict[str, Any], named: str
) -> None:
    _, engine = fake_engine
    before = len(engine.received)
    resp = await gateway.post("/api/v1/chat", json={"model": "fake", **body})
    assert resp.status_code == 400
    assert resp.json()["code"] == "invalid_request"
    assert named in resp.json()["error"]
    assert len(engine.received) == before


async def test_turned_off_templates_are_a_501_not_implemented(
    fake_engine: tuple[str, FakeEngine], tmp_path: Path
) -> None:
    url, _ = fake_engine
    async with gateway_with(url, tmp_path, poml_mode="off") as client:
        resp = await client.post("/api/v1/chat", json={"model": "fake", "poml": "<poml>x</poml>"})
    assert resp.status_code == 501
    assert resp.json()["code"] == "not_implemented"
    assert "POML templates are turned off" in resp.json()["error"]


async def test_a_tenants_second_template_while_its_first_is_pending_is_a_429_with_retry_after(
    fake_engine: tuple[str, FakeEngine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = fake_engine
    settings = Settings(engine="external", ollama_url=url, data_dir=tmp_path, poml_mode="trusted")
    app = create_app(settings)
    running, release = asyncio.Event(), asyncio.Event()

    async def held_render(work: Path, markup: str) -> object:  # the renderer's process, held until released
        running.set()
        await release.wait()
        return {"messages": [{"speaker": "human", "content": "Hi"}]}

    def chat(project: str) -> dict[str, Any]:
        return {"json": {"model": "fake", "poml": "<poml>Hi</poml>"}, "headers": {"X-Shared-Ollama-Project": project}}

    async with app.router.lifespan_context(app):
        renderer = app.state.poml
        monkeypatch.setattr(renderer, "_run", held_render)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client:
            first = asyncio.create_task(client.post("/api/v1/chat", **chat("alpha")))
            await asyncio.wait_for(running.wait(), timeout=10)
            busy = await client.post("/api/v1/chat", **chat("alpha"))
            other = asyncio.create_task(client.post("/api/v1/chat", **chat("beta")))  # waits; not refused
            for _ in range(1000):  # bounded: 10 s
                if renderer.waiting == 1 or other.done():
                    break
                await asyncio.sleep(0.01)
            assert renderer.waiting == 1, "the other tenant's template never waited for the renderer"
            release.set()
            answers = await asyncio.gather(first, other)
    assert busy.status_code == 429, busy.text
    assert busy.json()["code"] == "tenant_busy" and "alpha" in busy.json()["error"]
    assert busy.headers["Retry-After"] == "2"
    assert [answer.status_code for answer in answers] == [200, 200]


async def test_the_chat_schema_shows_the_template_fields(gateway: httpx.AsyncClient) -> None:
    schema = (await gateway.get("/api/openapi.json")).json()
    body = schema["paths"]["/api/v1/chat"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"poml", "context", "messages"} <= set(body["properties"])
