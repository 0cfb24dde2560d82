"""OpenAI <-> native converters."""

from __future__ import annotations

import base64
import struct

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol import convert
from shared_ollama.protocol.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest


def chat(**kwargs: object) -> ChatCompletionRequest:
    base: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    base.update(kwargs)
    return ChatCompletionRequest.model_validate(base)


def test_sampling_options_map_to_native_options() -> None:
    native = convert.chat_request_to_native(
        chat(temperature=0.2, top_p=0.9, seed=7, max_tokens=12, stop="END", presence_penalty=0.5)
    )
    assert native["options"] == {
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "num_predict": 12,
        "stop": ["END"],
        "presence_penalty": 0.5,
    }
    assert native["stream"] is False
    assert "format" not in native


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    native = convert.chat_request_to_native(chat(max_tokens=50, max_completion_tokens=5))
    assert native["options"]["num_predict"] == 5


def test_response_formats() -> None:
    assert convert.chat_request_to_native(chat(response_format={"type": "json_object"}))["format"] == "json"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert convert.chat_request_to_native(chat(response_format=fmt))["format"] == schema
    assert "format" not in convert.chat_request_to_native(chat(response_format={"type": "text"}))
    with pytest.raises(InvalidRequest):
        convert.chat_request_to_native(chat(response_format={"type": "json_schema", "json_schema": {}}))


def test_content_parts_and_images() -> None:
    png = base64.b64encode(b"\x89PNG....").decode()
    msg = {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
            {"type": "text", "text": "this?"},
        ],
    }
    native = convert.chat_request_to_native(chat(messages=[{"role": "developer", "content": "be brief"}, msg]))
    assert native["messages"][0] == {"role": "system", "content": "be brief"}
    assert native["messages"][1] == {
        "role": "user",
        "content": "what is\nthis?",
        "images": [f"data:image/png;base64,{png}"],
    }


def test_image_urls_are_left_to_the_image_pipeline() -> None:
    for url in ("data:image/png,rawbytes", "data:image/png;BASE64,AAAA", "https://example.com/a.png"):
        msg = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
        native = convert.chat_request_to_native(chat(messages=[msg]))
        assert native["messages"][0]["images"] == [url]


def test_tool_calls_round_trip() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    history = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "c1", "name": "get_weather"},
    ]
    native = convert.chat_request_to_native(chat(messages=history, tools=tools))
    assert native["tools"] == tools
    assert native["messages"][1]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert native["messages"][2]["tool_name"] == "get_weather"
    response = convert.chat_response_from_native(
        {
            "model": "m",
            "message": {"role": "assistant", "content": "", "tool_calls": native["messages"][1]["tool_calls"]},
        },
        request_id="r1",
        created=1,
    )
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}


def test_chat_response_and_usage() -> None:
    native = {
        "model": "smollm2:135m",
        "message": {"role": "assistant", "content": "Paris."},
        "done": True,
        "done_reason": "length",
        "prompt_eval_count": 10,
        "eval_count": 3,
    }
    out = convert.chat_response_from_native(native, request_id="abc", created=5)
    assert out["id"] == "chatcmpl-abc"
    assert out["object"] == "chat.completion"
    assert out["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "Paris."},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}


def test_stream_chunks() -> None:
    first = convert.chat_chunk_from_native(
        {"model": "m", "message": {"content": "Pa"}, "done": False},
        request_id="r",
        created=1,
        first=True,
        include_usage=True,
    )
    assert first[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Pa"}
    last = convert.chat_chunk_from_native(
        {"model": "m", "message": {"content": ""}, "done": True, "done_reason": "stop", "eval_count": 2},
        request_id="r",
        created=1,
        first=False,
        include_usage=True,
    )
    assert [c["choices"][0]["finish_reason"] if c["choices"] else "usage" for c in last] == ["stop", "usage"]
    assert last[-1]["usage"]["completion_tokens"] == 2
    no_usage = convert.chat_chunk_from_native(
        {"model": "m", "message": {"content": ""}, "done": True},
        request_id="r",
        created=1,
        first=False,
        include_usage=False,
    )
    assert len(no_usage) == 1


def test_completion_conversion() -> None:
    req = CompletionRequest.model_validate({"model": "m", "prompt": ["The sky is"], "max_tokens": 4, "stream": True})
    assert convert.completion_request_to_native(req) == {
        "model": "m",
        "prompt": "The sky is",
        "stream": True,
        "options": {"num_predict": 4},
    }
    with pytest.raises(ValueError):
        CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"]})
    out = convert.completion_response_from_native(
        {"model": "m", "response": " blue", "done": True}, request_id="x", created=2
    )
    assert out["choices"][0]["text"] == " blue"
    assert out["object"] == "text_completion"


def test_embeddings_float_and_base64() -> None:
    native = {"model": "e", "embeddings": [[0.5, -1.0], [0.25, 2.0]], "prompt_eval_count": 4}
    floats = convert.embedding_response_from_native(native, encoding="float")
    assert floats["data"][1] == {"object": "embedding", "index": 1, "embedding": [0.25, 2.0]}
    assert floats["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    b64 = convert.embedding_response_from_native(native, encoding="base64")
    decoded = struct.unpack("<2f", base64.b64decode(b64["data"][0]["embedding"]))
    assert decoded == (0.5, -1.0)
    with pytest.raises(ValueError):
        EmbeddingRequest.model_validate({"model": "e", "input": [[1, 2, 3]]})


def test_models_from_tags() -> None:
    tags = {"models": [{"name": "smollm2:135m", "modified_at": "2026-11-25T07:00:00.123456789Z"}]}
    out = convert.models_from_tags(tags)
    assert out["object"] == "list"
    assert out["data"][0]["id"] == "smollm2:135m"
    assert out["data"][0]["created"] == 1795590000


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
ASK = [{"role": "user", "content": "hi"}]


def test_tool_choice_auto_keeps_the_tools_none_drops_them_and_forcing_becomes_a_call_format() -> None:
    def native(choice: object, **extra: object) -> dict[str, object]:
        req = ChatCompletionRequest.model_validate(
            {"model": "m", "messages": ASK, "tools": [TOOL], "tool_choice": choice, **extra}
        )
        return convert.chat_request_to_native(req)

    assert native(None)["tools"] == [TOOL]
    assert native("auto")["tools"] == [TOOL]
    assert "tools" not in native("none") and "format" not in native("none")
    for forced in ("required", {"type": "function", "function": {"name": "f"}}):
        body = native(forced)
        assert "tools" not in body, "a forced call is made by the format, not left to the model"
        assert body["format"]["properties"]["name"] == {"type": "string", "enum": ["f"]}
        assert body["messages"][0]["role"] == "system" and "'f'" in body["messages"][0]["content"]
    with pytest.raises(InvalidRequest) as refused:
        native("required", response_format={"type": "json_object"})
    assert refused.value.param == "tool_choice"
    with pytest.raises(InvalidRequest) as unknown:
        native({"type": "function", "function": {"name": "g"}})
    assert unknown.value.param == "tool_choice"


def test_logprobs_pass_to_the_native_request() -> None:
    native = convert.chat_request_to_native(chat(logprobs=True, top_logprobs=3))
    assert (native["logprobs"], native["top_logprobs"]) == (True, 3)
    assert "logprobs" not in convert.chat_request_to_native(chat(logprobs=False))
    with pytest.raises(InvalidRequest) as refused:
        convert.chat_request_to_native(chat(top_logprobs=3))
    assert refused.value.param == "top_logprobs"


@pytest.mark.parametrize(("field", "value"), [("logit_bias", {"50256": -100}), ("audio", {"v": 1})])
def test_fields_nothing_honours_are_refused_by_name(field: str, value: object) -> None:
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": ASK, field: value})
    with pytest.raises(InvalidRequest) as refused:
        convert.chat_request_to_native(req)
    assert refused.value.param == field
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "p", field: value})
    with pytest.raises(InvalidRequest):
        convert.completion_request_to_native(completion)


@pytest.mark.parametrize(("field", "value"), [("logprobs", 2), ("top_logprobs", 3)])
def test_completion_logprobs_are_refused_by_name(field: str, value: object) -> None:
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "p", field: value})
    with pytest.raises(InvalidRequest) as refused:
        convert.completion_request_to_native(completion)
    assert refused.value.param == field


def test_fields_that_ask_for_nothing_pass() -> None:
    fields = {"logprobs": False, "parallel_tool_calls": True, "store": False, "metadata": None, "logit_bias": {}}
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": ASK, **fields})
    assert convert.chat_request_to_native(req)["messages"] == ASK


def test_echo_puts_the_prompt_before_the_answer() -> None:
    native = {"model": "m", "response": " blue.", "done": True, "done_reason": "stop"}
    out = convert.completion_response_from_native(native, request_id="r", created=1, echo="The sky is")
    assert out["choices"][0]["text"] == "The sky is blue."
    assert convert.completion_response_from_native(native, request_id="r", created=1)["choices"][0]["text"] == " blue."


def test_logprobs_come_back_on_the_answer_and_on_each_chunk() -> None:
    token = {"token": "Pa", "logprob": -0.25, "bytes": [80, 97], "top_logprobs": [{"token": "Pa", "logprob": -0.25}]}
    native = {"model": "m", "message": {"content": "Pa"}, "logprobs": [token], "done": True, "done_reason": "stop"}
    out = convert.chat_response_from_native(native, request_id="r", created=1)
    assert out["choices"][0]["logprobs"]["content"][0]["token"] == "Pa"
    chunks = convert.chat_chunk_from_native(
        {**native, "done": False}, request_id="r", created=1, first=True, include_usage=False
    )
    assert chunks[0]["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0]["logprob"] == -0.25
