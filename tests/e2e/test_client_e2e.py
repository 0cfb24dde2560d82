"""The Python client (``clients/python``, ``shared_ollama_client``) against the real service, engine and models.

Every method on the session's gateway (chat, generate, their streams, OpenAI-shaped chat completions,
embeddings, models, agents, health, queue stats, typed errors), then its retries against a tenant at its cap: a
gateway that lets each tenant one text request in flight, one long streamed request holding the place (from the
moment the engine generates it), and a second request through the client. With a short budget it gets
``TenantBusy``; with a long one it waits as ``Retry-After`` says (the injected sleep records the wait, and ends
the held request meanwhile) and succeeds. Closing a stream, or cancelling the task reading one, frees the place
and stops the generation in the engine. Generations are short and greedy; the long one is abandoned.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from shared_ollama_client import (
    AsyncClient,
    Client,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    TenantBusy,
)

from tests.e2e.conftest import start_gateway
from tests.support.processes import poll, stop

pytestmark = pytest.mark.e2e

CHAT_MODEL = "smollm2:135m"
EMBED_MODEL = "all-minilm"
GREEDY = {"num_predict": 8, "temperature": 0}
HI = [{"role": "user", "content": "Say hello."}]
HOLD = [{"role": "user", "content": "List the numbers from 1 to 1000."}]
LONG = {"type": "array", "items": {"type": "integer"}, "minItems": 1000}  # an answer that cannot end early
CAPPED = "capped"


@pytest.fixture(scope="module")
def client(gateway_url: str) -> Iterator[Client]:
    with Client(gateway_url, project="client-e2e", timeout=120, max_retry_seconds=30) as c:
        yield c


def test_chat_and_its_stream(client: Client) -> None:
    answer = client.chat(CHAT_MODEL, HI, options=GREEDY)
    assert answer["done"] is True and answer["message"]["role"] == "assistant"
    assert answer["message"]["content"].strip()
    assert 0 < answer["eval_count"] <= GREEDY["num_predict"]

    with client.chat(CHAT_MODEL, HI, options=GREEDY, stream=True) as stream:
        chunks = list(stream)
    assert stream.request_id
    assert len(chunks) > 1 and chunks[-1]["done"] is True
    assert all(c["done"] is False for c in chunks[:-1])
    assert "".join(c["message"]["content"] for c in chunks).strip()
    assert 0 < chunks[-1]["eval_count"] <= GREEDY["num_predict"]


def test_generate_and_its_stream(client: Client) -> None:
    answer = client.generate(CHAT_MODEL, "The capital of France is", options=GREEDY)
    assert answer["done"] is True and answer["response"].strip()
    chunks = list(client.generate(CHAT_MODEL, "The capital of France is", options=GREEDY, stream=True))
    assert chunks[-1]["done"] is True
    assert "".join(c["response"] for c in chunks).strip()


def test_chat_completions_in_openai_shape(client: Client) -> None:
    completion = client.chat_completions(CHAT_MODEL, HI, max_tokens=8, temperature=0)
    assert completion["object"] == "chat.completion"
    choice = completion["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert 0 < completion["usage"]["completion_tokens"] <= 8

    chunks = list(client.chat_completions(CHAT_MODEL, HI, max_tokens=8, temperature=0, stream=True))
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).strip()
    assert any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)


def test_embeddings(client: Client) -> None:
    two = client.embeddings(EMBED_MODEL, ["a cat", "a dog"])
    assert len(two["embeddings"]) == 2 and len(two["embeddings"][0]) == 384
    one = client.embeddings(EMBED_MODEL, "a cat")
    assert one["embedding"] == one["embeddings"][0]


def test_models_health_and_queue_stats(client: Client) -> None:
    names = {m["name"] for m in client.models.list()}
    assert {CHAT_MODEL, f"{EMBED_MODEL}:latest"} <= names
    shown = client.models.show(CHAT_MODEL)
    assert "completion" in shown["capabilities"] and shown["details"]["family"]
    assert isinstance(client.models.ps(), list)
    health = client.health()
    assert health["status"] == "healthy" and health["service_version"]
    stats = client.queue_stats()
    assert stats["you"]["tenant"] == "client-e2e"
    assert stats["queue_depth"] == 0


def test_a_batch_of_chats(client: Client) -> None:
    items = [{"model": CHAT_MODEL, "messages": HI, "options": GREEDY}, {"model": "no-such-model:1b", "messages": HI}]
    batch = client.batch_chat(items, concurrency=2)
    assert (batch["total"], batch["succeeded"], batch["failed"]) == (2, 1, 1)
    good, bad = batch["results"]
    assert good["ok"] is True and good["response"]["done"] is True
    assert bad["ok"] is False and bad["code"] == "model_not_found"


def test_a_model_is_created_copied_and_deleted(client: Client) -> None:
    client.models.create("client-e2e-terse", f"FROM {CHAT_MODEL}\nSYSTEM Answer in five words or fewer.\n")
    try:
        assert "five words" in client.models.show("client-e2e-terse")["system"]
        client.models.copy("client-e2e-terse", "client-e2e-copy")
        assert {"client-e2e-terse:latest", "client-e2e-copy:latest"} <= {m["name"] for m in client.models.list()}
    finally:
        client.models.delete("client-e2e-copy")
        client.models.delete("client-e2e-terse")
    assert not {"client-e2e-terse:latest", "client-e2e-copy:latest"} & {m["name"] for m in client.models.list()}
    with pytest.raises(ModelNotFound):
        client.models.delete("client-e2e-terse")


def test_the_services_errors_arrive_typed(client: Client) -> None:
    with pytest.raises(ModelNotFound) as missing:
        client.chat("no-such-model:1b", HI, options=GREEDY)
    assert (missing.value.status, missing.value.code) == (404, "model_not_found")
    assert missing.value.request_id
    with pytest.raises(InvalidRequest) as invalid:
        client.chat(CHAT_MODEL, HI, options={"temperature": -1})
    assert invalid.value.status == 400 and "temperature" in invalid.value.message
    with pytest.raises(InvalidRequest):
        client.chat_completions(CHAT_MODEL, HI, temperature=5)  # the OpenAI-format error body, typed the same
    with pytest.raises(NotFound):
        client.agents.get("no-such-agent")


def test_an_agent_is_created_run_streamed_and_deleted(client: Client) -> None:
    client.agents.create("greeter", CHAT_MODEL, system="Answer in one short sentence.", options=GREEDY)
    try:
        assert "greeter" in {a["name"] for a in client.agents.list()}
        assert client.agents.get("greeter")["model"] == CHAT_MODEL
        run = client.agents.run("greeter", "Say hello.")
        assert run["output"].strip() and run["run_id"]
        with client.agents.run("greeter", "Say hello.", stream=True) as events:
            kinds = [e["type"] for e in events]
        assert kinds[-1] == "done" and "message_delta" in kinds
    finally:
        client.agents.delete("greeter")
    assert "greeter" not in {a["name"] for a in client.agents.list()}


# ---------------------------------------------------------------- a tenant at its cap


@pytest.fixture(scope="module")
def capped_url(
    engine_url: str, model_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A gateway in front of the session's engine that lets each tenant one text request in flight."""
    url, proc = start_gateway(
        model_store,
        tmp_path_factory.mktemp("gw-client-cap"),
        artifacts_dir / "gateway-client-e2e.log",
        env={
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": engine_url,
            "SHARED_OLLAMA_MAX_INFLIGHT_TEXT": "1",
        },
    )
    try:
        yield url
    finally:
        stop(proc)


def in_flight(url: str) -> int:
    with Client(url, project=CAPPED, max_retry_seconds=0) as c:
        return int(c.queue_stats()["tenants"].get(CAPPED, {}).get("text", {}).get("in_flight", 0))


def generations(engine_url: str) -> int:
    """The generations running in the engine (its own ``/api/ps``)."""
    return int(httpx.get(f"{engine_url}/api/ps", timeout=30).json()["generations"])


def hold_options() -> dict[str, Any]:
    return {"num_predict": 3000, "temperature": 0}


def test_retries_against_a_tenant_at_its_cap(capped_url: str, engine_url: str) -> None:
    holder = Client(capped_url, project=CAPPED, timeout=120, max_retry_seconds=0)
    hold = holder.chat(CHAT_MODEL, HOLD, options=hold_options(), format=LONG, stream=True)
    try:
        next(hold)  # admitted, and the engine is generating it
        assert in_flight(capped_url) == 1 and generations(engine_url) >= 1

        waits: list[float] = []
        short = Client(capped_url, project=CAPPED, max_retry_seconds=0.5, sleep=waits.append)
        with short, pytest.raises(TenantBusy) as refused:
            short.chat(CHAT_MODEL, HI, options=GREEDY)
        assert waits == [], "the wait asked for (Retry-After >= 1 s) does not fit a 0.5 s budget"
        assert refused.value.status == 429 and refused.value.retry_after is not None
        assert refused.value.retry_after >= 1 and refused.value.request_id

        def wait_while_the_first_finishes(seconds: float) -> None:
            waits.append(seconds)
            hold.close()  # the first request ends: its connection closes, the service frees the place
            poll(lambda: in_flight(capped_url) == 0, "the held place given back")

        with Client(capped_url, project=CAPPED, max_retry_seconds=60, sleep=wait_while_the_first_finishes) as patient:
            answer = patient.chat(CHAT_MODEL, HI, options=GREEDY)
        assert answer["done"] is True and 0 < answer["eval_count"] <= GREEDY["num_predict"]
        assert len(waits) == 1 and waits[0] >= 1.0, "waited at least as long as Retry-After said"
        poll(lambda: generations(engine_url) == 0, "the abandoned generation stopped in the engine")
    finally:
        hold.close()
        holder.close()


def test_cancelling_the_task_reading_a_stream_frees_the_place(capped_url: str, engine_url: str) -> None:
    async def held(client: AsyncClient) -> int:
        return int((await client.queue_stats())["tenants"][CAPPED]["text"]["in_flight"])

    async def scenario() -> None:
        async with AsyncClient(capped_url, project=CAPPED, timeout=120, max_retry_seconds=0) as client:
            stream = await client.chat(CHAT_MODEL, HOLD, options=hold_options(), format=LONG, stream=True)
            first = asyncio.Event()

            async def read() -> None:
                async for _ in stream:
                    first.set()

            task = asyncio.create_task(read())
            await asyncio.wait_for(first.wait(), 60)
            assert await held(client) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert stream.closed
            # the client (and its connection pool) stays open: the cancelled stream's own connection was closed
            deadline = time.monotonic() + 30
            while await held(client) != 0:
                assert time.monotonic() < deadline, "timed out waiting for the cancelled stream's place"
                await asyncio.sleep(0.1)  # polling interval, not synchronisation

    asyncio.run(scenario())
    poll(lambda: generations(engine_url) == 0, "the cancelled generation stopped in the engine")
    with Client(capped_url, project=CAPPED, max_retry_seconds=0) as client:
        assert client.chat(CHAT_MODEL, HI, options=GREEDY)["done"] is True
