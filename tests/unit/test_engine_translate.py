"""Pure conversions: Ollama requests to llama.cpp's OpenAI-shaped requests, and llama.cpp results back."""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared_ollama.engine.store import ModelEntry
from shared_ollama.engine.translate import (
    Accumulator,
    TranslationError,
    chat_request,
    check_options,
    check_request,
    chunk_text,
    content_payload,
    created_at,
    final_fields,
    generate_request,
    response,
    sampling,
)
from tests.support.engine import entry


def model(**fields: Any) -> ModelEntry:
    values: dict[str, Any] = {"name": "m:latest", "digest": "sha256:00", "size": 1, "capabilities": ["completion"]}
    values.update(fields)
    return ModelEntry(**values)


USER = {"role": "user", "content": "Capital of France?"}
RESULT = {
    "choices": [{"message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3},
    "timings": {"prompt_n": 12, "prompt_ms": 4.5, "predicted_n": 3, "predicted_ms": 30.25},
}


def test_options_map_to_llama_sampling() -> None:
    options = {
        "temperature": 0,
        "top_p": 0.9,
        "top_k": 40.0,
        "min_p": 0.05,
        "seed": 7,
        "num_predict": 16,
        "stop": ["\n\n"],
        "repeat_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "num_ctx": 2048,
    }
    out = sampling(options, None)
    assert out == {
        "temperature": 0,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "seed": 7,
        "stop": ["\n\n"],
        "max_tokens": 16,
        "repeat_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
    }
    assert isinstance(out["top_k"], int)


@pytest.mark.parametrize("num_predict", [-1, -2, None])
def test_unbounded_num_predict_sets_no_limit(num_predict: int | None) -> None:
    assert "max_tokens" not in sampling({"num_predict": num_predict}, None)


def test_formats_become_response_formats() -> None:
    assert sampling({}, "json")["response_format"] == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert sampling({}, schema)["response_format"] == {"type": "json_schema", "json_schema": {"schema": schema}}
    assert "response_format" not in sampling({}, "")
    with pytest.raises(TranslationError):
        sampling({}, "yaml")


@pytest.mark.parametrize(
    "options",
    [[1], "hot", {"temperature": "hot"}, {"num_predict": "5"}, {"seed": True}, {"stop": [1]}, {"num_ctx": []}],
)
def test_badly_typed_options_are_rejected(options: Any) -> None:
    with pytest.raises(TranslationError):
        check_options(options)


def test_unknown_options_pass_validation() -> None:
    assert check_options({"num_gpu": 1, "whatever": "x"}) == {"num_gpu": 1, "whatever": "x"}
    assert check_options(None) == {}


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("chat", {"messages": "hi"}),
        ("chat", {"messages": ["hi"]}),
        ("chat", {"messages": [{"role": "user", "content": 5}]}),
        ("chat", {"messages": [{"role": "user", "content": "x", "images": "AAAA"}]}),
        ("chat", {"messages": [{"role": "assistant", "tool_calls": [{"name": "f"}]}]}),
        ("chat", {"messages": [], "tools": "f"}),
        ("chat", {"messages": [], "stream": "yes"}),
        ("chat", {"messages": [], "format": 3}),
        ("generate", {"prompt": ["a"]}),
        ("generate", {"prompt": "a", "system": 1}),
        ("generate", {"prompt": "a", "images": [1]}),
        ("generate", {"prompt": "a", "options": {"top_k": "many"}}),
    ],
)
def test_malformed_requests_are_rejected(kind: str, body: dict[str, Any]) -> None:
    with pytest.raises(TranslationError):
        check_request(kind, body)


def test_well_formed_requests_pass() -> None:
    check_request("chat", {"messages": [USER], "options": {"temperature": 0}, "format": "json", "stream": False})
    check_request("generate", {"prompt": "x", "images": ["AAAA"], "format": {"type": "object"}})


def test_chat_applies_the_model_system_messages_and_parameters() -> None:
    entry = model(
        system="Be terse.",
        parameters={"temperature": 0.1, "num_predict": 9, "stop": ["<end>"]},
        messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
    )
    out = chat_request({"messages": [USER], "options": {"num_predict": 3}}, entry)
    assert [m["content"] for m in out["messages"]] == ["Be terse.", "Hi", "Hello", USER["content"]]
    assert out["temperature"] == 0.1
    assert out["max_tokens"] == 3  # the request wins over the model's parameters
    assert out["stop"] == ["<end>"]


def test_a_request_system_message_replaces_the_model_system() -> None:
    out = chat_request({"messages": [{"role": "system", "content": "Own."}, USER]}, model(system="Model's."))
    assert [m["content"] for m in out["messages"]] == ["Own.", USER["content"]]


def test_images_need_a_projector() -> None:
    with_image = {"messages": [{**USER, "images": ["iVBORw0KGgo="]}]}
    with pytest.raises(TranslationError, match="does not support images"):
        chat_request(with_image, model())
    with pytest.raises(TranslationError, match="does not support images"):
        generate_request({"prompt": "?", "images": ["iVBORw0KGgo="]}, model())
    parts = chat_request(with_image, model(projector="sha256:11", capabilities=["completion", "vision"]))
    content = parts["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": USER["content"]}
    assert content[1]["image_url"]["url"].endswith("base64,iVBORw0KGgo=")


def test_tools_pass_through_and_tool_history_becomes_openai() -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    history = [
        USER,
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "weather", "arguments": {"c": 1}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "weather"},
    ]
    out = chat_request({"messages": history, "tools": tools}, model())
    assert out["tools"] == tools
    call = out["messages"][1]["tool_calls"][0]
    assert call["type"] == "function"
    assert call["function"] == {"name": "weather", "arguments": '{"c":1}'}
    assert out["messages"][2] == {"role": "tool", "content": "sunny", "name": "weather"}


def test_generate_uses_the_chat_template_unless_raw() -> None:
    method, templated = generate_request({"prompt": "Hi", "options": {"seed": 1}}, model(system="S"))
    assert method == "handle_chat_completions"
    assert templated["messages"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
    assert templated["seed"] == 1
    method, own = generate_request({"prompt": "Hi", "system": "Mine"}, model(system="S"))
    assert own["messages"][0] == {"role": "system", "content": "Mine"}
    method, raw = generate_request({"prompt": "<|im_start|>user", "raw": True}, model(system="S"))
    assert method == "handle_completions"
    assert raw["prompt"] == "<|im_start|>user"
    assert "messages" not in raw


def test_a_result_becomes_ollamas_final_answer() -> None:
    out = response("chat", "smollm2:135m", RESULT, started_ns=0, load_ns=42)
    assert out["model"] == "smollm2:135m"
    assert out["message"] == {"role": "assistant", "content": "Paris."}
    assert out["done"] is True
    assert out["done_reason"] == "stop"
    assert (out["prompt_eval_count"], out["eval_count"]) == (12, 3)
    assert out["prompt_eval_duration"] == 4_500_000
    assert out["eval_duration"] == 30_250_000
    assert out["load_duration"] == 42
    assert out["total_duration"] > 0
    generated = response("generate", "m", {**RESULT, "choices": [{"text": "Paris.", "finish_reason": "length"}]}, 0, 0)
    assert generated["response"] == "Paris."
    assert generated["done_reason"] == "length"


def test_tool_calls_come_back_with_object_arguments() -> None:
    calls = [{"type": "function", "id": "c1", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]
    result = {**RESULT, "choices": [{"message": {"content": "", "tool_calls": calls}, "finish_reason": "tool_calls"}]}
    out = response("chat", "m", result, 0, 0)
    assert out["message"]["tool_calls"] == [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}]
    assert out["done_reason"] == "stop"


def test_stream_chunks() -> None:
    assert chunk_text({"choices": [{"delta": {"role": "assistant", "content": None}}]}) == ("", None, None)
    assert chunk_text({"choices": [{"delta": {"content": "Pa"}, "finish_reason": None}]}) == ("Pa", None, None)
    assert chunk_text({"choices": [{"delta": {}, "finish_reason": "length"}]}) == ("", None, "length")
    assert chunk_text({"choices": [{"text": "x", "finish_reason": None}]}) == ("x", None, None)
    assert chunk_text({"choices": [], "usage": {"completion_tokens": 1}}) == ("", None, None)
    assert content_payload("chat", "a") == {"message": {"role": "assistant", "content": "a"}}
    assert content_payload("generate", "a") == {"response": "a"}


def test_final_fields_use_usage_then_timings() -> None:
    fields = final_fields({"timings": {"prompt_n": 5, "predicted_n": 2, "prompt_ms": 1, "predicted_ms": 2}}, None, 0, 0)
    assert (fields["prompt_eval_count"], fields["eval_count"], fields["done_reason"]) == (5, 2, "stop")
    assert final_fields({}, "length", 0, 0)["done_reason"] == "length"


def test_accumulated_chunks_equal_a_whole_result() -> None:
    acc = Accumulator()
    for chunk in (
        {"choices": [{"delta": {"role": "assistant", "content": None}}]},
        {"choices": [{"delta": {"content": "Par"}}]},
        {"choices": [{"delta": {"content": "is."}}]},
        {"choices": [{"delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": RESULT["usage"], "timings": RESULT["timings"]},
    ):
        acc.feed(chunk)
    assert acc.result() == {**RESULT, "choices": [{"finish_reason": "stop", **RESULT["choices"][0]}]}
    completion = Accumulator()
    completion.feed({"choices": [{"text": "once", "finish_reason": "length"}]})
    assert completion.result()["choices"] == [{"finish_reason": "length", "text": "once"}]


def test_timestamps_are_rfc3339_utc_with_nanoseconds() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", created_at())


def test_sampling_options_and_formats() -> None:
    out = sampling({"temperature": 0, "top_k": 5, "num_predict": 7, "stop": "END", "seed": 3}, "json")
    assert out == {
        "temperature": 0,
        "top_k": 5,
        "seed": 3,
        "stop": ["END"],
        "max_tokens": 7,
        "response_format": {"type": "json_object"},
    }
    schema = {"type": "object"}
    assert sampling({"num_predict": -1}, schema) == {
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}
    }
    with pytest.raises(TranslationError):
        sampling({}, "yaml")


def test_chat_request_applies_the_models_system_and_parameters() -> None:
    model = entry(system="Be terse.", parameters={"temperature": 0.1, "num_predict": 9})
    out = chat_request({"messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 3}}, model)
    assert out["messages"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
    assert out["temperature"] == 0.1
    assert out["max_tokens"] == 3
    own_system = chat_request(
        {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}, model
    )
    assert [m["content"] for m in own_system["messages"]] == ["x", "y"]


def test_images_need_a_vision_model() -> None:
    with pytest.raises(TranslationError, match="does not support images"):
        chat_request({"messages": [{"role": "user", "content": "?", "images": ["AAAA"]}]}, entry())
    vision = entry(projector="sha256:11")
    out = chat_request({"messages": [{"role": "user", "content": "?", "images": ["AAAA"]}]}, vision)
    assert out["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64,AAAA"},
    }


def test_generate_raw_and_templated() -> None:
    method, raw = generate_request({"prompt": "The sky", "raw": True}, entry())
    assert (method, raw["prompt"]) == ("handle_completions", "The sky")
    method, templated = generate_request({"prompt": "Hi", "system": "S"}, entry())
    assert method == "handle_chat_completions"
    assert templated["messages"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]


def test_tool_calls_translate_both_ways() -> None:
    history = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}
    out = chat_request({"messages": [history]}, entry())
    assert out["messages"][0]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    result = {
        "choices": [
            {
                "message": {"content": "", "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 2}'}}]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2},
        "timings": {"prompt_ms": 1.5, "predicted_ms": 2.0},
    }
    native = response("chat", "m", result, started_ns=0, load_ns=5)
    assert native["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {"a": 2}}}]
    assert native["done_reason"] == "stop"
    assert native["prompt_eval_count"] == 4
    assert native["eval_duration"] == 2_000_000
    assert native["load_duration"] == 5


def test_chunks_and_timestamps() -> None:
    assert chunk_text({"choices": [{"delta": {"content": "Pa"}, "finish_reason": None}]}) == ("Pa", None, None)
    assert chunk_text({"choices": [{"text": "x", "finish_reason": "length"}]}) == ("x", None, "length")
    assert chunk_text({"choices": [], "usage": {}}) == ("", None, None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", created_at())


def test_streamed_tool_call_deltas_fold_into_whole_tool_calls() -> None:
    def delta(**fields: Any) -> dict[str, Any]:
        return {"choices": [{"delta": fields, "finish_reason": None}]}

    acc = Accumulator()
    acc.feed(delta(tool_calls=[{"index": 0, "id": "c0", "function": {"name": "get_weather", "arguments": ""}}]))
    acc.feed(delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city": "Pa'}}]))
    acc.feed(delta(tool_calls=[{"index": 1, "function": {"name": "get_time", "arguments": "{}"}}]))
    acc.feed(delta(tool_calls=[{"index": 0, "function": {"arguments": 'ris"}'}}]))
    acc.feed({"choices": [{"delta": {}, "finish_reason": "tool_calls"}], "usage": {"completion_tokens": 9}})
    out = response("chat", "m", acc.result(), 0, 0)
    assert out["message"]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"name": "get_time", "arguments": {}}},
    ]
    assert out["eval_count"] == 9


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("suffix", "end", "does not support insert"),
        ("template", "{{ .Prompt }}", "template"),
        ("context", [1, 2], "context"),
    ],
)
def test_generate_fields_this_engine_cannot_honour_are_refused_by_name(field: str, value: object, words: str) -> None:
    with pytest.raises(TranslationError, match=words):
        check_request("generate", {"model": "m", "prompt": "p", field: value})
    check_request("generate", {"model": "m", "prompt": "p", field: "" if isinstance(value, str) else []})
