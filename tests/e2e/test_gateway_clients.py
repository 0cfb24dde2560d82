"""The gateway with the real engine and models, driven by the official ollama and openai clients."""

from __future__ import annotations

import base64
import json
import struct

import ollama
import openai
import pytest

pytestmark = pytest.mark.e2e

CHAT_MODEL = "smollm2:135m"
EMBED_MODEL = "all-minilm"
QUESTION = [{"role": "user", "content": "Capital of France?"}]


def assert_finish(reason: str | None, produced: int | None, limit: int) -> None:
    """A real model ends on its own ("stop") or at the token limit ("length"): either is right, but the count
    must agree (a "length" answer has exactly ``limit`` tokens, a "stop" one between 1 and ``limit``)."""
    assert reason in ("stop", "length"), reason
    assert produced is not None and 0 < produced <= limit, produced
    if reason == "length":
        assert produced == limit, (reason, produced, limit)


@pytest.fixture(scope="module")
def ollama_client(gateway_url: str) -> ollama.Client:
    return ollama.Client(host=gateway_url)


@pytest.fixture(scope="module")
def openai_client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0)


def test_ollama_chat(ollama_client: ollama.Client) -> None:
    resp = ollama_client.chat(model=CHAT_MODEL, messages=QUESTION, options={"num_predict": 24, "temperature": 0})
    assert resp.message.role == "assistant"
    assert resp.message.content.strip()
    assert resp.done
    assert 0 < resp.eval_count <= 24
    assert resp.prompt_eval_count > 0
    assert resp.total_duration > 0


def test_ollama_chat_stream(ollama_client: ollama.Client) -> None:
    chunks = list(ollama_client.chat(model=CHAT_MODEL, messages=QUESTION, stream=True, options={"num_predict": 16}))
    assert len(chunks) >= 2
    assert all(not c.done for c in chunks[:-1])
    assert chunks[-1].done
    assert_finish(chunks[-1].done_reason, chunks[-1].eval_count, 16)
    assert "".join(c.message.content for c in chunks).strip()


def test_ollama_generate_both_ways(ollama_client: ollama.Client) -> None:
    resp = ollama_client.generate(model=CHAT_MODEL, prompt="The sky is", options={"num_predict": 8})
    assert resp.response.strip()
    parts = list(ollama_client.generate(model=CHAT_MODEL, prompt="The sky is", stream=True, options={"num_predict": 8}))
    assert parts[-1].done
    assert parts[-1].eval_count <= 8


def test_ollama_embed_and_legacy_embeddings(ollama_client: ollama.Client) -> None:
    resp = ollama_client.embed(model=EMBED_MODEL, input=["cats purr", "kittens meow", "tax law"])
    assert len(resp.embeddings) == 3
    assert all(len(v) == 384 for v in resp.embeddings)
    legacy = ollama_client.embeddings(model=EMBED_MODEL, prompt="cats purr")
    assert len(legacy.embedding) == 384


def test_ollama_model_listing(ollama_client: ollama.Client) -> None:
    names = {m.model for m in ollama_client.list().models}
    assert {"smollm2:135m", "all-minilm:latest"} <= names
    shown = ollama_client.show(CHAT_MODEL)
    assert "completion" in (shown.capabilities or [])
    ollama_client.chat(model=CHAT_MODEL, messages=QUESTION, options={"num_predict": 1})
    assert CHAT_MODEL in {m.model for m in ollama_client.ps().models}


def test_ollama_unknown_model(ollama_client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client.chat(model="no-such-model:1b", messages=QUESTION)
    assert info.value.status_code == 404
    assert "not found" in info.value.error


def test_openai_chat(openai_client: openai.OpenAI) -> None:
    resp = openai_client.chat.completions.create(
        model=CHAT_MODEL, messages=QUESTION, max_tokens=24, temperature=0, seed=1
    )
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content
    assert resp.usage is not None
    assert_finish(resp.choices[0].finish_reason, resp.usage.completion_tokens, 24)


def test_openai_chat_stream_with_usage(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model=CHAT_MODEL, messages=QUESTION, max_tokens=12, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1, finals
    assert chunks[-1].usage is not None
    assert_finish(finals[0], chunks[-1].usage.completion_tokens, 12)


def test_openai_stream_carries_the_whole_answer_in_order(openai_client: openai.OpenAI) -> None:
    """Text chunks are written by a fast path (protocol/openai_stream.py): streamed and non-streamed answers to
    the same greedy request, both from the engine (cache off), are the same text, in chunks the SDK parses."""
    ask = {"model": CHAT_MODEL, "messages": QUESTION, "max_tokens": 24, "temperature": 0, "seed": 7}
    off = {"X-Shared-Ollama-Cache": "off"}
    whole = openai_client.chat.completions.create(**ask, extra_headers=off)  # type: ignore[call-overload]
    chunks = list(openai_client.chat.completions.create(**ask, stream=True, extra_headers=off))  # type: ignore[call-overload]
    assert len(chunks) > 3, "the answer came in pieces"
    assert {(c.id, c.object, c.model) for c in chunks} == {(chunks[0].id, "chat.completion.chunk", CHAT_MODEL)}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks][-1] == whole.choices[0].finish_reason


def test_openai_json_schema(openai_client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "country": {"type": "string", "maxLength": 30}},
        "required": ["city", "country"],
    }
    resp = openai_client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Name a city and its country as JSON."}],
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    )
    parsed = json.loads(resp.choices[0].message.content or "")
    assert set(parsed) == {"city", "country"}


def test_openai_tools_are_passed_through(openai_client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    resp = openai_client.chat.completions.create(model=CHAT_MODEL, messages=ask, tools=tools, max_tokens=64)
    choice = resp.choices[0]
    if choice.finish_reason == "tool_calls":  # a call, parsed from the model's output into OpenAI's shape
        call = (choice.message.tool_calls or [])[0]
        assert call.function.name == "get_weather"
        assert isinstance(json.loads(call.function.arguments), dict)
    else:
        assert choice.message.content and resp.usage is not None
        assert_finish(choice.finish_reason, resp.usage.completion_tokens, 64)
    unknown = {"type": "function", "function": {"name": "get_time"}}  # forced calls: test_ollama_parity_e2e.py
    with pytest.raises(openai.BadRequestError) as refused:  # a call that cannot be made is refused by name
        openai_client.chat.completions.create(model=CHAT_MODEL, messages=ask, tools=tools, tool_choice=unknown)
    assert refused.value.body["param"] == "tool_choice"  # type: ignore[index]


def test_openai_completions_echo_the_prompt_and_generate_refuses_a_suffix(openai_client: openai.OpenAI) -> None:
    resp = openai_client.completions.create(model=CHAT_MODEL, prompt="The sky is", max_tokens=4, echo=True)
    assert resp.choices[0].text.startswith("The sky is") and len(resp.choices[0].text) > len("The sky is")
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.completions.create(model=CHAT_MODEL, prompt="def f(", suffix="return 1", max_tokens=4)
    assert "does not support insert" in str(refused.value)


def test_openai_completions(openai_client: openai.OpenAI) -> None:
    resp = openai_client.completions.create(model=CHAT_MODEL, prompt="The sky is", max_tokens=6)
    assert resp.choices[0].text and resp.usage is not None
    assert_finish(resp.choices[0].finish_reason, resp.usage.completion_tokens, 6)
    stream = list(
        openai_client.completions.create(
            model=CHAT_MODEL, prompt="One, two,", max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
    )
    finals = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1, finals
    assert stream[-1].usage is not None
    assert_finish(finals[0], stream[-1].usage.completion_tokens, 6)


def test_openai_embeddings_float_and_base64(openai_client: openai.OpenAI) -> None:
    as_floats = openai_client.embeddings.create(model=EMBED_MODEL, input=["hello world"], encoding_format="float")
    as_b64 = openai_client.embeddings.create(model=EMBED_MODEL, input="hello world", encoding_format="base64")
    sdk_default = openai_client.embeddings.create(model=EMBED_MODEL, input="hello world")  # base64, decoded by the SDK
    a = as_floats.data[0].embedding
    raw = base64.b64decode(as_b64.data[0].embedding)  # type: ignore[arg-type]
    b = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    c = sdk_default.data[0].embedding
    assert len(a) == len(b) == len(c) == 384
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-6
    assert max(abs(x - y) for x, y in zip(a, c, strict=True)) < 1e-6


def test_openai_models(openai_client: openai.OpenAI) -> None:
    ids = {m.id for m in openai_client.models.list().data}
    assert CHAT_MODEL in ids
    assert openai_client.models.retrieve(CHAT_MODEL).id == CHAT_MODEL
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("nope")


def test_openai_unknown_model(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]
