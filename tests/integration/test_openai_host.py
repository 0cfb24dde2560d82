"""``OpenAIHostClient`` against a scripted OpenAI-compatible host, for what a real one will not do on demand: busy
answers, unknown models, streams cut short or failing mid-way, a host that is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from shared_ollama.backends.openai_host import OpenAIHostClient
from shared_ollama.backends.urls import masked_url
from shared_ollama.errors import BackendError, BackendUnavailable, FeatureNotImplemented, InvalidRequest, ModelNotFound
from tests.support.processes import free_port

KEY = "sk-upstream-secret"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n\n" for e in events)


@pytest.fixture
async def host() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A scripted host: ``state["answer"]`` decides each answer; ``state["seen"]`` keeps (path, auth, body)."""
    state: dict[str, Any] = {"seen": []}

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        state["seen"].append((request.path, request.headers.get("Authorization"), orjson.loads(body or b"{}")))
        answer: Callable[[web.Request], Any] = state["answer"]
        result = answer(request)
        if isinstance(result, bytes):  # an SSE stream, sent in one write and then the connection ends
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(result)
            return resp
        return result

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}", state
    finally:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        yield http


async def test_the_key_goes_as_bearer_and_the_path_under_v1(
    host: tuple[str, dict[str, Any]], session: aiohttp.ClientSession
) -> None:
    url, state = host
    state["answer"] = lambda _: web.json_response(
        {"choices": [{"message": {"content": "yo"}, "finish_reason": "stop"}]}
    )
    answer = await OpenAIHostClient(url + "/v1/", KEY, session).chat({**CHAT, "keep_alive": 0})
    assert orjson.loads(answer.body)["message"]["content"] == "yo"
    assert answer.dropped == ("keep_alive",)
    path, auth, body = state["seen"][-1]
    assert (path, auth) == ("/v1/chat/completions", f"Bearer {KEY}")
    assert body["stream"] is False and "keep_alive" not in body


@pytest.mark.parametrize(
    ("status", "payload", "error", "text"),
    [
        (
            400,
            {"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}},
            InvalidRequest,
            "max_tokens is too large",
        ),
        (404, {"error": {"message": "The model `m` does not exist.", "code": 404}}, ModelNotFound, "does not exist"),
        (500, {"error": {"message": "CUDA out of memory"}}, BackendError, "CUDA out of memory"),
    ],
)
async def test_upstream_errors_become_the_services_and_keep_their_message(
    host: tuple[str, dict[str, Any]],
    session: aiohttp.ClientSession,
    status: int,
    payload: dict[str, Any],
    error: type[Exception],
    text: str,
) -> None:
    url, state = host
    state["answer"] = lambda _: web.json_response(payload, status=status)
    with pytest.raises(error, match=text) as info:
        await OpenAIHostClient(url, KEY, session).chat(CHAT)
    assert type(info.value) is error
    with pytest.raises(error, match=text):  # the same before a stream's first byte
        async with OpenAIHostClient(url, KEY, session).stream_chat(CHAT):
            pass


async def test_a_busy_host_is_unavailable_with_its_retry_after(
    host: tuple[str, dict[str, Any]], session: aiohttp.ClientSession
) -> None:
    url, state = host
    state["answer"] = lambda _: web.json_response(
        {"error": {"message": "too many requests"}}, status=429, headers={"Retry-After": "7"}
    )
    with pytest.raises(BackendUnavailable, match="too many requests") as info:
        await OpenAIHostClient(url, KEY, session).embed({"model": "e", "input": "x"})
    assert info.value.retry_after == 7.0


async def test_a_host_that_is_gone_is_unavailable_and_the_url_is_masked(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = OpenAIHostClient(url, KEY, session)
    with pytest.raises(BackendUnavailable) as info:
        await client.chat(CHAT)
    assert KEY not in str(info.value) and KEY not in repr(client)
    assert info.value.retry_after
    with_password = url.replace("//", "//user:pw@")
    client = OpenAIHostClient(with_password, None, session)
    with pytest.raises(BackendUnavailable) as info:
        await client.chat(CHAT)
    assert "pw" not in str(info.value) and "pw" not in repr(client)
    assert masked_url(with_password) == url.replace("//", "//user:***@")
    with pytest.raises(ValueError, match="not both"):
        OpenAIHostClient(with_password, KEY, session)


async def test_a_stream_cut_before_its_finish_fails_from_its_lines(
    host: tuple[str, dict[str, Any]], session: aiohttp.ClientSession
) -> None:
    url, state = host
    state["answer"] = lambda _: sse({"choices": [{"delta": {"content": "Hel"}}]})  # then the connection ends
    got: list[dict[str, Any]] = []
    with pytest.raises(BackendUnavailable, match="before its answer was complete"):
        async with OpenAIHostClient(url, KEY, session).stream_chat(CHAT) as stream:
            async for line in stream.lines:
                got.append(orjson.loads(line))
    assert [line["message"]["content"] for line in got] == ["Hel"]


async def test_an_error_event_mid_stream_fails_from_its_lines(
    host: tuple[str, dict[str, Any]], session: aiohttp.ClientSession
) -> None:
    url, state = host
    state["answer"] = lambda _: sse({"choices": [{"delta": {"content": "a"}}]}, {"error": {"message": "engine died"}})
    with pytest.raises(BackendError, match="engine died"):
        async with OpenAIHostClient(url, KEY, session).stream_generate({"model": "m", "prompt": "p"}) as stream:
            async for _ in stream.lines:
                pass


async def test_a_stream_that_finished_without_done_still_ends_with_its_done_line(
    host: tuple[str, dict[str, Any]], session: aiohttp.ClientSession
) -> None:
    url, state = host
    state["answer"] = lambda _: (
        b": keep-alive comment\n\n"
        + sse(
            {
                "choices": [{"text": "x", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            },
        )
    )
    async with OpenAIHostClient(url, KEY, session).stream_generate(
        {"model": "m", "prompt": "p", "raw": True}
    ) as stream:
        lines = [orjson.loads(line) async for line in stream.lines]
    assert state["seen"][-1][0] == "/v1/completions"
    assert [line["response"] for line in lines] == ["x", ""]
    assert lines[-1]["done"] is True and lines[-1]["prompt_eval_count"] == 3


async def test_models_lists_the_hosts_ids(host: tuple[str, dict[str, Any]], session: aiohttp.ClientSession) -> None:
    url, state = host
    state["answer"] = lambda _: web.json_response({"object": "list", "data": [{"id": "a"}, {"id": "b"}, {}]})
    assert await OpenAIHostClient(url, None, session).models() == ["a", "b"]
    assert state["seen"][-1][:2] == ("/v1/models", None)


async def test_the_engine_client_interface_dispatches_native_paths(
    host: tuple[str, dict[str, Any]], session: aiohttp.ClientSession
) -> None:
    url, state = host
    client = OpenAIHostClient(url, KEY, session)
    state["answer"] = lambda _: web.json_response({"data": [{"id": "a"}]})
    assert orjson.loads(await client.request("GET", "/api/tags")) == {"models": [{"name": "a", "model": "a"}]}
    state["answer"] = lambda _: web.json_response({"data": [{"index": 0, "embedding": [3.0, 4.0]}]})
    dropped: list[str] = []
    native = await client.request_json("POST", "/api/embed", {"model": "e", "input": "x", "truncate": False})
    assert native["embeddings"] == [[0.6, 0.8]]
    await client.request("POST", "/api/embed", {"model": "e", "input": "x", "keep_alive": 0}, dropped=dropped)
    assert dropped == ["keep_alive"] and state["seen"][-1][0] == "/v1/embeddings"
    state["answer"] = lambda _: sse({"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]}, b"[DONE]")
    async with client.stream("/api/chat", {**CHAT, "options": {"num_ctx": 8}}, dropped=dropped) as lines:
        got = [orjson.loads(line) async for line in lines]
    assert [line["done"] for line in got] == [False, True] and dropped[-1] == "options.num_ctx"
    assert await client.count_tokens("m", CHAT) is None
    with pytest.raises(FeatureNotImplemented):
        await client.request("POST", "/api/show", {"model": "m"})
    with pytest.raises(FeatureNotImplemented):
        async with client.stream("/api/pull", {"model": "m"}):
            pass
