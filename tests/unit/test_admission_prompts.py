"""The prompt check before admission: what it refuses without the engine, when it asks the engine's tokenizer
(only with ``"load": false``), and how every tokenizer failure falls back to the estimate."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from shared_ollama.backends.client import EngineClient
from shared_ollama.errors import BackendError, BackendUnavailable, ModelNotFound, PromptTooLarge
from shared_ollama.service.admission.prompts import MAX_BYTES_PER_TOKEN, check_prompt_size

JsonDict = dict[str, Any]
LIMIT = 1000


class FakeClient:
    """Counts tokens as told: a number, an error to raise, or never (``hang``)."""

    def __init__(self, answer: int | Exception | None = None, *, hang: bool = False) -> None:
        self.answer = answer
        self.hang = hang
        self.calls: list[tuple[str, JsonDict]] = []

    async def count_tokens(self, model: str, body: JsonDict) -> int | None:
        self.calls.append((model, body))
        if self.hang:
            await asyncio.Event().wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def check(client: FakeClient, body: JsonDict, *, budget: float = 5.0) -> None:
    await check_prompt_size(cast(EngineClient, client), body, LIMIT, count_budget=budget)


def chat(*contents: str) -> JsonDict:
    return {"model": "m", "messages": [{"role": "user", "content": c} for c in contents]}


OVER_BY_ESTIMATE = chat("word " * 1200)  # 6,000 bytes: over the byte bound and 2,000 tokens by the estimate
UNDER_BY_ESTIMATE = chat("word " * 400)  # 2,000 bytes: over the byte bound, about 670 tokens by the estimate


async def test_a_small_prompt_passes_without_the_engine() -> None:
    client = FakeClient(10**6)
    await check(client, chat("hello"))
    assert client.calls == []


async def test_more_messages_than_the_limit_has_tokens_is_refused_without_the_engine() -> None:
    client = FakeClient(1)
    with pytest.raises(PromptTooLarge) as info:
        await check(client, chat(*["x"] * (LIMIT + 1)))
    assert client.calls == []
    assert info.value.param == "messages"
    assert "refused without counting" in info.value.message


async def test_far_more_bytes_than_the_limit_allows_is_refused_without_the_engine() -> None:
    client = FakeClient(1)
    with pytest.raises(PromptTooLarge) as info:
        await check(client, {"model": "m", "prompt": "x" * (LIMIT * MAX_BYTES_PER_TOKEN + 1)})
    assert client.calls == []
    assert info.value.param == "prompt"


async def test_the_engine_counts_only_a_loaded_model() -> None:
    client = FakeClient(LIMIT + 1)
    with pytest.raises(PromptTooLarge) as info:
        await check(client, UNDER_BY_ESTIMATE)
    assert "counted with the model's tokenizer" in info.value.message
    [(model, body)] = client.calls
    assert model == "m"
    assert body["load"] is False, "a count before admission must not load the model"
    await check(FakeClient(LIMIT), OVER_BY_ESTIMATE)  # the exact count wins over the estimate


@pytest.mark.parametrize(
    "failure",
    [
        BackendError("engine error (HTTP 409): model 'm' is not loaded"),
        BackendError("engine error (HTTP 500): boom"),
        BackendUnavailable("engine unreachable"),
    ],
)
async def test_a_tokenizer_that_cannot_count_leaves_the_estimate(failure: Exception) -> None:
    with pytest.raises(PromptTooLarge) as info:
        await check(FakeClient(failure), OVER_BY_ESTIMATE)
    assert "estimated" in info.value.message
    await check(FakeClient(failure), UNDER_BY_ESTIMATE)


async def test_a_tokenizer_that_takes_too_long_leaves_the_estimate() -> None:
    client = FakeClient(hang=True)
    with pytest.raises(PromptTooLarge) as info:
        await check(client, OVER_BY_ESTIMATE, budget=0.01)
    assert "estimated" in info.value.message
    await check(FakeClient(hang=True), UNDER_BY_ESTIMATE, budget=0.01)
    assert len(client.calls) == 1


async def test_an_unknown_model_is_still_the_clients_error() -> None:
    with pytest.raises(ModelNotFound):
        await check(FakeClient(ModelNotFound("model 'm' not found")), UNDER_BY_ESTIMATE)


async def test_the_tools_schemas_count_towards_the_prompt() -> None:
    tool = {"type": "function", "function": {"name": "f", "description": "d " * 20_000, "parameters": {}}}
    client = FakeClient(1)
    with pytest.raises(PromptTooLarge) as info:
        await check(client, {**chat("hi"), "tools": [tool]})
    assert client.calls == [] and "refused without counting" in info.value.message
    small = {**chat("word " * 400), "tools": [{"type": "function", "function": {"name": "g"}}]}
    await check(client, small)
    assert client.calls[-1][1]["tools"] == small["tools"]  # the engine counts them as its template renders them
