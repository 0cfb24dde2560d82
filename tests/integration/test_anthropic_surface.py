"""The Anthropic surface against the scripted engine, driven by the official ``anthropic`` SDK where it can be:
the faults the real engine cannot produce on demand (a full queue, a busy tenant, engine errors, a failure mid-stream),
Anthropic's error shapes and statuses with ``Retry-After``, hanging up on the engine at a stop sequence, images
through the image pipeline, and the request's record (surface, end user)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from shared_ollama.app import create_app
from shared_ollama.service.observability.records import RequestRecord
from shared_ollama.settings import Settings
from tests.integration.conftest import Engine, ServedGateway, assert_drained, chat, gate_name, project, until
from tests.support.fake_engine import FakeEngine
from tests.support.images import b64, encode, photo
from tests.support.vision import VISION, header, marker, opened, sent_images

Start = Callable[..., ServedGateway]
JsonDict = dict[str, Any]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def sdk() -> AsyncIterator[Callable[..., anthropic.AsyncAnthropic]]:
    """Official SDK clients for served gateways (no retries: each refusal is seen as sent), closed after the test."""
    made: list[anthropic.AsyncAnthropic] = []

    def make(gw: ServedGateway, api_key: str = "unused", **options: Any) -> anthropic.AsyncAnthropic:
        made.append(anthropic.AsyncAnthropic(base_url=gw.url, api_key=api_key, max_retries=0, **options))
        return made[-1]

    yield make
    for client in made:
        await client.close()


def error_of(resp: httpx.Response, status: int, kind: str) -> JsonDict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert body["request_id"] == resp.headers["X-Shared-Ollama-Request-Id"]
    return dict(body["error"])


def sse_events(text: str) -> list[tuple[str, JsonDict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


async def test_a_full_queue_is_529_overloaded_and_a_busy_tenant_429_both_with_retry_after(
    serve_gateway: Start, engine: Engine, http: Any, sdk: Any
) -> None:
    gw = serve_gateway(engine_slots=2, max_queue=0, max_inflight_text=1)
    client = http(gw)
    gate = gate_name()
    running = [asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=project("a")))]
    await engine.waiting_at_least(gate, 1)
    with pytest.raises(anthropic.RateLimitError) as busy:
        await sdk(gw, default_headers=project("a")).messages.create(model="fake", max_tokens=8, messages=HI)
    assert busy.value.status_code == 429
    assert busy.value.response.headers["Retry-After"] == "1"
    assert isinstance(busy.value.body, dict) and busy.value.body["error"]["type"] == "rate_limit_error"
    running.append(asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=project("b"))))
    await engine.waiting_at_least(gate, 2)
    with pytest.raises(anthropic.OverloadedError) as full:
        await sdk(gw, default_headers=project("c")).messages.create(model="fake", max_tokens=8, messages=HI)
    assert full.value.status_code == 529
    assert full.value.response.headers["Retry-After"] == "1"
    assert isinstance(full.value.body, dict)
    assert full.value.body["error"]["type"] == "overloaded_error"
    assert full.value.body["error"]["retry_after"] == 1.0
    streamed = await client.post(
        "/v1/messages", json={"model": "fake", "max_tokens": 8, "messages": HI, "stream": True}
    )
    error_of(streamed, 529, "overloaded_error")
    assert streamed.headers["Retry-After"] == "1", "refused before the first byte: an ordinary HTTP error"
    await engine.open(gate)
    assert [r.status_code for r in await asyncio.gather(*running)] == [200, 200]
    await assert_drained(client)


async def test_errors_before_the_first_byte_take_anthropics_shapes(serve_gateway: Start, http: Any, sdk: Any) -> None:
    gw = serve_gateway(max_body_bytes=4096, api_keys="app:sk-app")
    client = http(gw)
    keyed = {"x-api-key": "sk-app"}
    base = {"model": "fake", "max_tokens": 8, "messages": HI}
    with pytest.raises(anthropic.NotFoundError) as missing:
        await sdk(gw, api_key="sk-app").messages.create(model="missing-model", max_tokens=8, messages=HI)
    assert isinstance(missing.value.body, dict) and missing.value.body["error"]["type"] == "not_found_error"
    assert missing.value.request_id == missing.value.response.headers["X-Shared-Ollama-Request-Id"]
    down = error_of(
        await client.post("/v1/messages", json={**base, "model": "fault-503"}, headers=keyed), 503, "api_error"
    )
    assert down["retry_after"] == 2.0
    broken = await client.post("/v1/messages", json={**base, "model": "fault-500"}, headers=keyed)
    error_of(broken, 502, "api_error")
    huge = await client.post(
        "/v1/messages", json={**base, "messages": [{"role": "user", "content": "x" * 8000}]}, headers=keyed
    )
    error_of(huge, 413, "request_too_large")
    error_of(await client.post("/v1/messages", json=base), 401, "authentication_error")
    error_of(
        await client.post("/v1/messages", json=base, headers={"x-api-key": "sk-nope"}), 401, "authentication_error"
    )
    refused = error_of(
        await client.post("/v1/messages", json={**base, "container": "c1"}, headers=keyed), 400, "invalid_request_error"
    )
    assert refused["message"] == "'container' is not supported by this service"
    unknown = await client.post("/v1/messages/batches", json={}, headers=keyed)
    error_of(unknown, 404, "not_found_error")


async def test_a_failure_mid_stream_ends_with_one_error_event(serve_gateway: Start, http: Any, sdk: Any) -> None:
    gw = serve_gateway()
    client = http(gw)
    body = {"model": "error-midstream", "max_tokens": 8, "messages": HI, "stream": True}
    resp = await client.post("/v1/messages", json=body)
    assert resp.status_code == 200
    events = sse_events(resp.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert names[-1] == "error" and names.count("error") == 1 and "message_stop" not in names
    last = events[-1][1]
    assert last["type"] == "error" and last["error"]["type"] == "api_error"
    assert "scripted mid-stream failure" in last["error"]["message"]
    with pytest.raises(anthropic.APIStatusError):
        async with sdk(gw).messages.stream(model="crash-midstream", max_tokens=8, messages=HI) as stream:
            async for _ in stream:
                pass
    await assert_drained(client)


@pytest.mark.parametrize("streamed", [True, False])
async def test_a_stop_sequence_ends_the_answer_without_waiting_for_the_engine(
    serve_gateway: Start, engine: Engine, http: Any, sdk: Any, streamed: bool
) -> None:
    gw = serve_gateway()
    client = http(gw)
    text = marker()
    fake: FakeEngine = engine.engine

    async def engine_idle() -> bool:
        return fake.in_flight == 0

    await until(engine_idle, "no generation left in the scripted engine")
    paced = fake.config.token_ms
    fake.config.token_ms = 20  # 200 paced tokens: 4 s of generation the answer must not wait for
    try:
        messages = [{"role": "user", "content": text}]
        if streamed:
            async with sdk(gw).messages.stream(
                model="fake", max_tokens=200, messages=messages, stop_sequences=[" tok"]
            ) as stream:
                pieces = [piece async for piece in stream.text_stream]
                message = await stream.get_final_message()
            assert "".join(pieces) == "tok"
        else:
            message = await sdk(gw).messages.create(
                model="fake", max_tokens=200, messages=messages, stop_sequences=[" tok"]
            )
        assert fake.in_flight == 1, "answered at the match, not after the engine's last token"
    finally:
        fake.config.token_ms = paced
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == " tok"
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "tok"  # type: ignore[union-attr]
    assert message.usage.output_tokens == 2, "the chunks read up to the match"
    assert message.usage.input_tokens > 0, "the scripted engine has no tokenizer: the estimate"
    [sent] = [r for r in fake.received if r["path"] == "/api/chat" and text in str(r["body"].get("messages"))]
    assert sent["body"]["stream"] is True and "stop" not in sent["body"]["options"]
    await assert_drained(client)
    await until(engine_idle, "the scripted engine done with its paced tokens")


async def test_images_go_through_the_image_pipeline(serve_gateway: Start, engine: Engine, http: Any, sdk: Any) -> None:
    gw = serve_gateway()
    client = http(gw)
    text = marker()
    jpeg = encode(photo(2000, 1500), "JPEG", quality=70)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": b64(jpeg)}}
    content = [{"type": "text", "text": text}, image]
    message = await sdk(gw).messages.create(
        model=VISION,
        max_tokens=8,
        messages=[{"role": "user", "content": content}],  # type: ignore[list-item]
    )
    assert message.content[0].text == "tok " * 8  # type: ignore[union-attr]
    [sent] = sent_images(engine, text, "/api/chat")
    assert opened(sent).size == (1536, 1152), "downscaled by the image pipeline before the engine"
    seen = await client.post(
        "/v1/messages",
        json={
            "model": "fake",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": [{"type": "text", "text": marker()}, image]}],
        },
    )
    assert "cannot see images" in error_of(seen, 400, "invalid_request_error")["message"]
    counted = await client.post(
        "/v1/messages",
        json={
            "model": VISION,
            "max_tokens": 8,
            "messages": [{"role": "user", "content": [{"type": "text", "text": marker()}, image]}],
        },
    )
    assert header(counted)["count"] == "1"


@pytest.fixture
async def in_process(
    fake_engine: tuple[str, FakeEngine], tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, list[RequestRecord]]]:
    """The app in process, with the records it accounts collected."""
    settings = Settings(engine="external", ollama_url=fake_engine[0], data_dir=tmp_path)
    app = create_app(settings)
    records: list[RequestRecord] = []
    async with app.router.lifespan_context(app):
        telemetry = app.state.telemetry
        keep = telemetry.record

        def record(rec: RequestRecord) -> None:
            records.append(rec)
            keep(rec)

        telemetry.record = record
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client, records


async def test_the_record_names_the_surface_and_the_end_user(
    in_process: tuple[httpx.AsyncClient, list[RequestRecord]],
) -> None:
    client, records = in_process
    body = {"model": "fake", "max_tokens": 8, "messages": HI, "metadata": {"user_id": "user-42"}}
    resp = await client.post("/v1/messages", json=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["usage"] == {"input_tokens": 3, "output_tokens": 8}
    request_id = resp.headers["X-Shared-Ollama-Request-Id"]
    assert resp.headers["request-id"] == request_id and answer["id"] == f"msg_{request_id}"
    [rec] = [r for r in records if r.route == "/v1/messages"]
    assert (rec.surface, rec.user, rec.prompt_tokens, rec.completion_tokens) == ("anthropic", "user-42", 3, 8)
    counted = await client.post("/v1/messages/count_tokens", json={"model": "fake", "messages": HI})
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0, "estimated: no tokenizer"
