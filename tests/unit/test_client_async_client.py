"""The asyncio Python client against a scripted service: the same retries and typed errors as the blocking one,
streams as async iterators, and cancelling the task that reads a stream closes its connection."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from shared_ollama_client import AsyncClient, BackendUnavailable, ClientTimeout, ConnectionFailed, TenantBusy

from tests.unit.client_fakes import Parts, Script, Sleeper, error, lines, ok, streamed

HI = [{"role": "user", "content": "Hi"}]
ANSWER = {"model": "m", "message": {"role": "assistant", "content": "Hello"}, "done": True}


def make(script: Script, sleeper: Sleeper, *, budget: float = 30.0) -> AsyncClient:
    return AsyncClient(
        "http://service.test",
        project="proj",
        transport=httpx.MockTransport(script),
        sleep=sleeper.async_sleep,
        clock=sleeper.clock,
        random=lambda: 0.0,
        max_retry_seconds=budget,
    )


async def test_a_429_is_retried_after_its_retry_after_then_succeeds() -> None:
    script = Script(error(429, "tenant_busy", header="3"), ok(ANSWER))
    sleeper = Sleeper()
    async with make(script, sleeper) as client:
        answer = await client.chat("m", HI, options={"num_predict": 4})
    assert answer["message"]["content"] == "Hello"
    assert sleeper.waits == [3.0] and len(script.requests) == 2
    assert script.requests[1].headers["X-Shared-Ollama-Project"] == "proj"


async def test_an_exhausted_budget_raises_the_typed_error() -> None:
    busy = error(429, "tenant_busy", header="2")
    script = Script(busy, busy)
    sleeper = Sleeper()
    with pytest.raises(TenantBusy):
        await make(script, sleeper, budget=3.0).chat("m", HI)
    assert sleeper.waits == [2.0] and len(script.requests) == 2


async def test_an_error_frame_after_the_first_chunk_raises_and_is_not_retried() -> None:
    frame = {"error": "engine restarting", "code": "backend_unavailable", "retry_after": 2.0}
    body = Parts([lines({"message": {"content": "He"}, "done": False}, frame)])
    script = Script(streamed(body))
    sleeper = Sleeper()
    stream = await make(script, sleeper).chat("m", HI, stream=True)
    seen = []
    with pytest.raises(BackendUnavailable):
        async for chunk in stream:
            seen.append(chunk["message"]["content"])
    assert seen == ["He"]
    assert sleeper.waits == [] and len(script.requests) == 1 and body.closed


async def test_a_stream_cut_before_its_last_chunk_raises() -> None:
    body = Parts([lines({"message": {"content": "He"}, "done": False})])
    stream = await make(Script(streamed(body)), Sleeper()).chat("m", HI, stream=True)
    with pytest.raises(ConnectionFailed):
        async for _ in stream:
            pass


async def test_cancelling_the_reading_task_closes_the_connection() -> None:
    body = Parts([lines({"response": "He", "done": False})], hang=True)
    stream = await make(Script(streamed(body)), Sleeper()).generate("m", "Hi", stream=True)
    first = asyncio.Event()

    async def read() -> None:
        async for _ in stream:
            first.set()

    task = asyncio.create_task(read())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.closed and body.closed


async def test_leaving_an_async_with_block_closes_the_stream() -> None:
    body = Parts([lines({"response": "He", "done": False})], hang=True)
    client = make(Script(streamed(body)), Sleeper())
    async with await client.generate("m", "Hi", stream=True) as stream:
        assert (await stream.__anext__())["response"] == "He"
    assert body.closed


async def test_models_and_agents_are_awaited() -> None:
    progress = Parts([lines({"status": "pulling"}, {"status": "success"})])
    events = Parts([lines({"type": "message_delta", "content": "4"}, {"type": "done", "output": "4"})])
    script = Script(
        ok({"models": [{"name": "m"}]}),
        streamed(progress),
        ok({"agents": [{"name": "calc"}]}),
        streamed(events),
        ok({"status": "healthy"}),
    )
    client = make(script, Sleeper())
    assert [m["name"] for m in await client.models.list()] == ["m"]
    seen: list[str] = []
    assert (await client.models.pull("m", progress=lambda p: seen.append(p["status"])))["status"] == "success"
    assert seen == ["pulling", "success"]
    assert [a["name"] for a in await client.agents.list()] == ["calc"]
    run = await client.agents.run("calc", "2+2?", stream=True)
    assert [e["type"] async for e in run] == ["message_delta", "done"]
    assert (await client.health())["status"] == "healthy"
    await client.aclose()


async def test_a_chat_can_send_a_poml_template_instead_of_messages() -> None:
    script = Script(ok(ANSWER))
    template = "<poml><human-msg>Hi {{ who }}</human-msg></poml>"
    await make(script, Sleeper()).chat("m", poml=template, context={"who": "Ada"})
    assert script.bodies()[0] == {"model": "m", "poml": template, "context": {"who": "Ada"}, "stream": False}
    with pytest.raises(ValueError, match="poml"):
        await make(Script(), Sleeper()).chat("m", HI, poml=template)


@pytest.mark.parametrize(
    ("failure", "raised"),
    [(httpx.ReadError("connection reset"), ConnectionFailed), (httpx.ReadTimeout("slow"), ClientTimeout)],
    ids=["read-error", "read-timeout"],
)
async def test_a_body_that_fails_mid_way_is_the_clients_error_and_not_sent_again(
    failure: Exception, raised: type[Exception]
) -> None:
    def reply() -> httpx.Response:
        body = Parts([b'{"embeddings": [[0.1, '], fail=failure)
        return httpx.Response(200, stream=body, headers={"X-Shared-Ollama-Request-Id": "rid-9"})

    script = Script(reply)
    sleeper = Sleeper()
    with pytest.raises(raised) as caught:
        await make(script, sleeper).embeddings("m", "a")
    assert caught.value.request_id == "rid-9"  # type: ignore[attr-defined]
    assert sleeper.waits == [] and len(script.requests) == 1
