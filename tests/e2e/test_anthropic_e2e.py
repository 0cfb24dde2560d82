"""The Anthropic Messages surface on the real gateway, engine and model, driven by the official ``anthropic`` SDK:
create, stream, stop sequences, a tool round trip, token counting, refusals and keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.e2e.conftest import start_gateway
from tests.support.processes import stop

pytestmark = pytest.mark.e2e

MODEL = "smollm2:135m"
QUESTION: list[Any] = [{"role": "user", "content": "Name three colours."}]
GREEDY = {"temperature": 0, "top_k": 1}
"""Sampling fields Anthropic's API still takes, though this SDK version has no arguments for them."""
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "London", "Tokyo"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def client(gateway_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway_url, api_key="unused", max_retries=0, timeout=120)


def assert_ended(message: anthropic.types.Message, limit: int) -> None:
    """A real model ends on its own (``end_turn``) or at the limit (``max_tokens``, with exactly ``limit`` tokens)."""
    assert message.stop_reason in ("end_turn", "max_tokens"), message.stop_reason
    assert 0 < message.usage.output_tokens <= limit
    if message.stop_reason == "max_tokens":
        assert message.usage.output_tokens == limit
    assert message.usage.input_tokens > 0


def test_create(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=24, system="Answer briefly.", messages=QUESTION, extra_body=GREEDY
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text.strip()  # type: ignore[union-attr]
    assert_ended(message, 24)


def test_stream(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=16, messages=QUESTION) as stream:
        pieces = list(stream.text_stream)
        message = stream.get_final_message()
    assert len(pieces) >= 2, "text arrives in deltas"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "".join(pieces)  # type: ignore[union-attr]
    assert message.id.startswith("msg_")
    assert_ended(message, 16)


def test_a_stop_sequence_cuts_the_answer_where_it_appears(client: anthropic.Anthropic) -> None:
    options: dict[str, Any] = {"model": MODEL, "max_tokens": 32, "messages": QUESTION, "extra_body": GREEDY}
    full = client.messages.create(**options)
    text = full.content[0].text  # type: ignore[union-attr]
    words = text.split()
    assert len(words) >= 4, text
    stop = " " + words[len(words) // 2]
    expected = text[: text.index(stop)]
    uncached = {"X-Shared-Ollama-Cache": "off"}  # from the engine, hung up on at the match, not a replay
    cut = client.messages.create(**options, stop_sequences=[stop], extra_headers=uncached)
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.content[0].text == expected  # type: ignore[union-attr]
    assert 0 < cut.usage.output_tokens < full.usage.output_tokens
    assert cut.usage.input_tokens == full.usage.input_tokens, "the prompt counted by the model's tokenizer"
    with client.messages.stream(**options, stop_sequences=[stop], extra_headers=uncached) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_sequence == stop and streamed.content[0].text == expected  # type: ignore[union-attr]


def test_a_tool_round_trip(client: anthropic.Anthropic) -> None:
    asked: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    call = client.messages.create(
        model=MODEL,
        max_tokens=32,
        messages=asked,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_body=GREEDY,
    )
    assert call.stop_reason == "tool_use"
    [use] = call.content
    assert use.type == "tool_use" and use.name == "get_weather" and use.id.startswith("toolu_")
    assert use.input["city"] in ("Paris", "London", "Tokyo")  # type: ignore[index]
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "18 degrees and sunny"}
    turn: list[Any] = [*asked, call.to_param(), {"role": "user", "content": [result]}]
    answer = client.messages.create(model=MODEL, max_tokens=24, messages=turn, tools=[WEATHER])
    assert [block.type for block in answer.content] == ["text"]
    assert_ended(answer, 24)
    longer: list[Any] = [*turn[:-1], {"role": "user", "content": [{**result, "content": result["content"] * 5}]}]
    assert client.messages.count_tokens(model=MODEL, messages=longer, tools=[WEATHER]).input_tokens > (
        client.messages.count_tokens(model=MODEL, messages=turn, tools=[WEATHER]).input_tokens
    ), "the tool's result reaches the model's prompt"


def test_streamed_forced_choice_among_tools(client: anthropic.Anthropic) -> None:
    clock: dict[str, Any] = {
        "name": "get_time",
        "description": "The current time in a timezone",
        "input_schema": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    }
    with client.messages.stream(
        model=MODEL,
        max_tokens=96,  # room to close the JSON whatever whitespace the grammar lets the model add
        messages=[{"role": "user", "content": "Weather in Tokyo?"}],
        tools=[WEATHER, clock],
        tool_choice={"type": "any"},
        extra_body={"temperature": 0},
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    [use] = message.content
    assert use.type == "tool_use" and use.name in ("get_weather", "get_time")
    assert set(use.input) == ({"city"} if use.name == "get_weather" else {"zone"})  # type: ignore[arg-type]


def test_count_tokens_matches_what_the_model_reads(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(model=MODEL, system="Answer briefly.", messages=QUESTION)
    message = client.messages.create(model=MODEL, max_tokens=1, system="Answer briefly.", messages=QUESTION)
    assert counted.input_tokens == message.usage.input_tokens > 0


def test_refusals_are_the_sdks_exceptions(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as missing:
        client.messages.create(model=MODEL, max_tokens=anthropic.omit, messages=QUESTION)  # type: ignore[call-overload]
    assert missing.value.status_code == 400
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in missing.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as thinking:
        client.messages.create(
            model=MODEL, max_tokens=8, messages=QUESTION, thinking={"type": "enabled", "budget_tokens": 1024}
        )
    assert "'thinking' is not supported" in str(thinking.value)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-unknown", max_tokens=8, messages=QUESTION)


@pytest.fixture(scope="module")
def keyed_gateway(
    model_store: Path, engine_url: str, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    url, proc = start_gateway(
        model_store,
        tmp_path_factory.mktemp("anthropic-keys"),
        artifacts_dir / "gateway-anthropic-keys.log",
        env={
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": engine_url,
            "SHARED_OLLAMA_API_KEYS": "app:sk-app",
        },
    )
    try:
        yield url
    finally:
        stop(proc)


def test_keys_by_x_api_key_and_bearer(keyed_gateway: str) -> None:
    only_x_api_key = {"Authorization": anthropic.omit, "X-Api-Key": "sk-app"}
    by_header = anthropic.Anthropic(
        base_url=keyed_gateway, api_key="sk-wrong", default_headers=only_x_api_key, max_retries=0, timeout=120
    )
    assert by_header.messages.create(model=MODEL, max_tokens=4, messages=QUESTION).usage.output_tokens > 0
    bearer = anthropic.Anthropic(base_url=keyed_gateway, auth_token="sk-app", max_retries=0, timeout=120)
    assert bearer.messages.count_tokens(model=MODEL, messages=QUESTION).input_tokens > 0
    wrong = anthropic.Anthropic(
        base_url=keyed_gateway,
        api_key="unused",
        default_headers={"Authorization": anthropic.omit, "X-Api-Key": "sk-wrong"},
        max_retries=0,
    )
    with pytest.raises(anthropic.AuthenticationError) as denied:
        wrong.messages.create(model=MODEL, max_tokens=4, messages=QUESTION)
    assert denied.value.status_code == 401
    assert isinstance(denied.value.body, dict) and denied.value.body["error"]["type"] == "authentication_error"
