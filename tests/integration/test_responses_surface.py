"""The Responses API's error paths and stored responses, in process against the scripted engine: a stream that
fails after its first byte, engine errors before it, other tenants' ids, refused fields, paging, truncation.
(What a real model answers is proven in tests/e2e/test_responses_e2e.py with the official SDK.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from shared_ollama.app import create_app
from shared_ollama.service.observability.records import RequestRecord
from shared_ollama.settings import Settings
from tests.integration.conftest import project
from tests.support.fake_engine import FakeEngine

JsonDict = dict[str, Any]
EVENTS = TypeAdapter(ResponseStreamEvent)


def sse(text: str) -> list[JsonDict]:
    """The events of an SSE body, each checked against its ``event:`` line and the SDK's types."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        event = orjson.loads(lines["data"])
        assert lines["event"] == event["type"]
        EVENTS.validate_python(event)
        events.append(event)
    return events


def openai_error(resp: httpx.Response, status: int) -> JsonDict:
    assert resp.status_code == status, resp.text
    error: JsonDict = resp.json()["error"]
    assert {"message", "type", "code", "param"} <= error.keys()
    return error


async def test_a_stream_failing_after_its_first_byte_ends_with_one_response_failed(gateway: httpx.AsyncClient) -> None:
    resp = await gateway.post("/v1/responses", json={"model": "error-midstream", "input": "hi", "stream": True})
    assert resp.status_code == 200
    events = sse(resp.text)
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] == "response.failed"
    assert [e["type"] for e in events].count("response.failed") == 1
    assert "response.completed" not in {e["type"] for e in events}
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    failed = Response.model_validate(events[-1]["response"])
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "server_error" and "scripted mid-stream failure" in failed.error.message
    assert failed.output_text == "tok tok "  # what came before the failure
    stored = await gateway.get(f"/v1/responses/{failed.id}")  # kept as failed: its id was already given out
    assert stored.json()["status"] == "failed"


@pytest.mark.parametrize("stream", [False, True])
async def test_engine_errors_before_the_first_byte_are_openai_errors(gateway: httpx.AsyncClient, stream: bool) -> None:
    resp = await gateway.post("/v1/responses", json={"model": "fault-503", "input": "hi", "stream": stream})
    error = openai_error(resp, 503)
    assert error["code"] == "backend_unavailable"
    assert int(resp.headers["Retry-After"]) >= 1


async def test_another_tenants_response_is_not_found(gateway: httpx.AsyncClient) -> None:
    created = await gateway.post("/v1/responses", json={"model": "fake", "input": "hi"}, headers=project("alpha"))
    response_id = created.json()["id"]
    for method, path in (("GET", ""), ("GET", "/input_items"), ("DELETE", "")):
        other = await gateway.request(method, f"/v1/responses/{response_id}{path}", headers=project("beta"))
        assert openai_error(other, 404)["code"] == "not_found"
    follow = {"model": "fake", "input": "more", "previous_response_id": response_id}
    refused = await gateway.post("/v1/responses", json=follow, headers=project("beta"))
    assert openai_error(refused, 404)["param"] == "previous_response_id"
    own = await gateway.get(f"/v1/responses/{response_id}", headers=project("alpha"))
    assert own.status_code == 200 and own.json()["id"] == response_id


async def test_a_follow_up_continues_the_stored_conversation_without_its_instructions(
    gateway: httpx.AsyncClient, fake_engine: tuple[str, FakeEngine]
) -> None:
    _, engine = fake_engine
    first = await gateway.post("/v1/responses", json={"model": "fake", "input": "first", "instructions": "A"})
    follow = {"model": "fake", "input": "second", "instructions": "B", "previous_response_id": first.json()["id"]}
    second = await gateway.post("/v1/responses", json=follow)
    assert second.status_code == 200 and second.json()["previous_response_id"] == first.json()["id"]
    assert engine.received[-1]["body"]["messages"] == [
        {"role": "system", "content": "B"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "tok " * 8},
        {"role": "user", "content": "second"},
    ]


@pytest.mark.parametrize("path", ["/v1/responses", "/api/v1/responses"])
async def test_refused_fields_are_named_in_openai_format(gateway: httpx.AsyncClient, path: str) -> None:
    for field, value in (("reasoning", {"effort": "high"}), ("service_tier", "flex"), ("conversation", "conv_1")):
        resp = await gateway.post(path, json={"model": "fake", "input": "hi", field: value})
        assert openai_error(resp, 400)["param"] == field
    resp = await gateway.post(path, json={"model": "fake", "input": [{"type": "item_reference", "id": "x"}]})
    assert openai_error(resp, 400)["param"] == "input.0"


async def test_store_false_keeps_nothing(gateway: httpx.AsyncClient) -> None:
    created = await gateway.post("/v1/responses", json={"model": "fake", "input": "hi", "store": False})
    assert created.status_code == 200 and created.json()["store"] is False
    assert openai_error(await gateway.get(f"/v1/responses/{created.json()['id']}"), 404)["code"] == "not_found"


async def test_input_items_are_paged(gateway: httpx.AsyncClient) -> None:
    items = [{"role": "user", "content": text} for text in ("one", "two", "three")]
    response_id = (await gateway.post("/v1/responses", json={"model": "fake", "input": items})).json()["id"]
    url = f"/v1/responses/{response_id}/input_items"
    first = (await gateway.get(url, params={"limit": 2, "order": "asc"})).json()
    assert [i["content"][0]["text"] for i in first["data"]] == ["one", "two"] and first["has_more"] is True
    rest = (await gateway.get(url, params={"limit": 2, "order": "asc", "after": first["last_id"]})).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["three"] and rest["has_more"] is False
    newest = (await gateway.get(url)).json()  # OpenAI's default order: newest first
    assert newest["data"][0]["content"][0]["text"] == "three"
    assert openai_error(await gateway.get(url, params={"limit": 0}), 400)["param"] == "limit"
    assert openai_error(await gateway.get(url, params={"include": "x"}), 400)["param"] == "include"
    assert openai_error(await gateway.get(f"/v1/responses/{response_id}", params={"stream": "true"}), 400)


async def test_the_user_fields_name_the_requests_user(gateway: httpx.AsyncClient) -> None:
    telemetry = gateway._transport.app.state.telemetry  # type: ignore[attr-defined]
    seen: list[RequestRecord] = []
    record = telemetry.record
    telemetry.record = lambda rec: (seen.append(rec), record(rec))
    try:
        await gateway.post("/v1/responses", json={"model": "fake", "input": "hi", "user": "u-1"})
        await gateway.post(
            "/v1/responses", json={"model": "fake", "input": "hi", "user": "u-1", "safety_identifier": "s-2"}
        )
    finally:
        telemetry.record = record
    assert [rec.user for rec in seen] == ["u-1", "s-2"]


@pytest.fixture
async def small_prompts(fake_engine: tuple[str, FakeEngine], tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with a 200-token prompt limit (the scripted engine has no tokenizer: the estimate counts)."""
    url, _ = fake_engine
    app = create_app(Settings(engine="external", ollama_url=url, data_dir=tmp_path, max_prompt_tokens=200))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


async def test_truncation_auto_drops_the_oldest_turns_disabled_refuses(
    small_prompts: httpx.AsyncClient, fake_engine: tuple[str, FakeEngine]
) -> None:
    _, engine = fake_engine
    # five turns of about 80 estimated tokens each, then the question: two of them fit under 200 tokens
    turns = [{"role": ("user", "assistant")[i % 2], "content": f"turn{i} " + "word " * 45} for i in range(5)]
    conversation = [*turns, {"role": "user", "content": "Say hi."}]
    refused = await small_prompts.post("/v1/responses", json={"model": "fake", "input": conversation})
    assert openai_error(refused, 400)["code"] == "prompt_too_large"
    body = {"model": "fake", "input": conversation, "instructions": "Be brief.", "truncation": "auto"}
    for stream in (False, True):
        resp = await small_prompts.post("/v1/responses", json={**body, "stream": stream})
        assert resp.status_code == 200, resp.text
        sent = engine.received[-1]["body"]["messages"]
        assert sent == [{"role": "system", "content": "Be brief."}, *conversation[3:]]  # as few dropped as fit
    alone = {"model": "fake", "input": "far " * 400, "truncation": "auto"}  # nothing left to drop: still too long
    assert openai_error(await small_prompts.post("/v1/responses", json=alone), 400)["code"] == "prompt_too_large"
