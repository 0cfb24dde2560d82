"""Native requests for an OpenAI-compatible host and its answers back (protocol/upstream_openai*.py)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from shared_ollama.errors import BackendError, InvalidRequest
from shared_ollama.protocol import upstream_openai as up
from shared_ollama.protocol.upstream_openai_stream import ChatStreamToNative, GenerateStreamToNative

PNG_B64 = "iVBORw0KGgoAAAANSUhEUg=="
JPEG_B64 = "/9j/4AAQSkZJRg=="


def chat_body(**fields: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


# ---------------------------------------------------------------- chat requests


def test_chat_sampling_options_map_and_the_rest_are_dropped_by_name() -> None:
    options = {
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 20,
        "min_p": 0.05,
        "seed": 7,
        "stop": "END",
        "num_predict": 12,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "num_ctx": 8192,
        "repeat_penalty": 1.1,
        "num_thread": 2,
    }
    body, dropped = up.chat_request(chat_body(options=options, keep_alive="5m", stream=False))
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 20,
        "min_p": 0.05,
        "seed": 7,
        "stop": ["END"],
        "max_tokens": 12,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "stream": False,
    }
    assert dropped == ["options.num_ctx", "options.repeat_penalty", "options.num_thread", "keep_alive"]


def test_negative_num_predict_is_no_limit_and_zero_is_dropped() -> None:
    body, dropped = up.chat_request(chat_body(options={"num_predict": -1}))
    assert "max_tokens" not in body and dropped == []
    body, dropped = up.chat_request(chat_body(options={"num_predict": 0}))
    assert "max_tokens" not in body and dropped == ["options.num_predict"]


def test_chat_streams_by_default_and_asks_for_usage() -> None:
    body, _ = up.chat_request(chat_body())
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    body, _ = up.chat_request(chat_body(stream=False))
    assert body["stream"] is False and "stream_options" not in body


def test_unknown_native_fields_are_dropped_by_name_and_empty_ones_ask_for_nothing() -> None:
    _, dropped = up.chat_request(chat_body(shiny=True, keep_alive=None, other=""))
    assert dropped == ["shiny"]


def test_images_become_data_uri_content_parts_with_their_type() -> None:
    messages = [{"role": "user", "content": "what is this", "images": [PNG_B64, JPEG_B64, "https://x/y.png"]}]
    body, _ = up.chat_request({"model": "m", "messages": messages})
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG_B64}"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
    ]


def test_tool_calls_get_ids_and_tool_messages_answer_them() -> None:
    messages = [
        {"role": "user", "content": "weather in Paris and time in Rome?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "clock", "arguments": {"city": "Rome"}}},
            ],
        },
        {"role": "tool", "tool_name": "clock", "content": "12:00"},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "tool_call_id": "given", "content": "extra"},
    ]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    body, _ = up.chat_request({"model": "m", "messages": messages, "tools": tools})
    calls = body["messages"][1]["tool_calls"]
    assert [c["type"] for c in calls] == ["function", "function"]
    assert [c["function"]["name"] for c in calls] == ["weather", "clock"]
    assert [orjson.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert len({c["id"] for c in calls}) == 2 and all("index" not in c for c in calls)
    assert body["messages"][2]["tool_call_id"] == calls[1]["id"]  # by its tool_name
    assert body["messages"][3]["tool_call_id"] == calls[0]["id"]  # the one left
    assert body["messages"][4]["tool_call_id"] == "given"
    assert body["tools"] == tools


def test_format_json_and_schema_become_response_format() -> None:
    body, _ = up.chat_request(chat_body(format="json"))
    assert body["response_format"] == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body, _ = up.chat_request(chat_body(format=schema))
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    with pytest.raises(InvalidRequest) as info:
        up.chat_request(chat_body(format="yaml"))
    assert info.value.param == "format"


@pytest.mark.parametrize(
    ("think", "kwargs", "effort"),
    [
        (False, {"enable_thinking": False}, None),
        (True, {"enable_thinking": True}, None),
        ("max", {"enable_thinking": True}, "high"),
    ],
)
def test_think_maps_to_the_template_switch_and_effort(
    think: object, kwargs: dict[str, bool], effort: str | None
) -> None:
    body, dropped = up.chat_request(chat_body(think=think))
    assert body["chat_template_kwargs"] == kwargs
    assert body.get("reasoning_effort") == effort
    assert dropped == []


def test_logprobs_keep_their_names_and_top_needs_logprobs() -> None:
    body, _ = up.chat_request(chat_body(logprobs=True, top_logprobs=3))
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    with pytest.raises(InvalidRequest) as info:
        up.chat_request(chat_body(top_logprobs=3))
    assert info.value.param == "top_logprobs"


def test_earlier_thinking_in_the_history_is_dropped_by_name() -> None:
    messages = [{"role": "assistant", "content": "x", "thinking": "hmm"}, {"role": "user", "content": "y"}]
    body, dropped = up.chat_request({"model": "m", "messages": messages})
    assert body["messages"][0] == {"role": "assistant", "content": "x"}
    assert dropped == ["messages.thinking"]


# ---------------------------------------------------------------- generate and embed requests


def test_generate_is_a_chat_with_system_and_images() -> None:
    body, dropped = up.generate_request(
        {"model": "m", "prompt": "describe", "system": "be brief", "images": [PNG_B64], "options": {"num_ctx": 4}}
    )
    assert up.is_chat_body(body)
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
            ],
        },
    ]
    assert dropped == ["options.num_ctx"]


def test_raw_generate_is_a_completion_without_chat_only_fields() -> None:
    body, dropped = up.generate_request(
        {"model": "m", "prompt": "Once upon", "raw": True, "think": True, "logprobs": True, "stream": False}
    )
    assert not up.is_chat_body(body)
    assert body == {"model": "m", "prompt": "Once upon", "stream": False}
    assert dropped == ["think", "logprobs"]


@pytest.mark.parametrize(
    ("field", "value"), [("suffix", "return x"), ("template", "{{ .Prompt }}"), ("context", [1, 2, 3])]
)
def test_generate_fields_that_change_the_prompt_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        up.generate_request({"model": "m", "prompt": "p", field: value})
    assert info.value.param == field


def test_raw_generate_with_system_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        up.generate_request({"model": "m", "prompt": "p", "raw": True, "system": "s"})
    assert info.value.param == "raw"


def test_embed_request_maps_input_and_dimensions_and_drops_the_rest() -> None:
    body, dropped = up.embed_request(
        {
            "model": "e",
            "input": ["a", "b"],
            "dimensions": 8,
            "truncate": True,
            "keep_alive": 0,
            "options": {"num_ctx": 9},
        }
    )
    assert body == {"model": "e", "input": ["a", "b"], "encoding_format": "float", "dimensions": 8}
    assert dropped == ["truncate", "keep_alive", "options.num_ctx"]
    with pytest.raises(InvalidRequest) as info:
        up.embed_request({"model": "e", "input": []})
    assert info.value.param == "input"


# ---------------------------------------------------------------- answers


def test_chat_answer_is_native_with_counts_durations_and_parsed_tool_calls() -> None:
    answer = {
        "created": 0,
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "let me look",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 31, "completion_tokens": 8},
        "timings": {"prompt_ms": 412.5, "predicted_ms": 184.0},
    }
    native = up.chat_answer(answer, "smollm2:135m", started_ns=1_000, now_ns=5_000)
    assert native == {
        "model": "smollm2:135m",
        "created_at": "1970-01-01T00:00:00Z",
        "message": {
            "role": "assistant",
            "content": "",
            "thinking": "let me look",
            "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}],
        },
        "done": True,
        "done_reason": "stop",
        "total_duration": 4_000,
        "load_duration": 0,
        "prompt_eval_count": 31,
        "prompt_eval_duration": 412_500_000,
        "eval_count": 8,
        "eval_duration": 184_000_000,
    }


def test_chat_answer_length_and_logprobs() -> None:
    item = {"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": [{"token": "Hi", "logprob": -0.5}]}
    answer = {"choices": [{"finish_reason": "length", "message": {"content": "Hi"}, "logprobs": {"content": [item]}}]}
    native = up.chat_answer(answer, "m", 0, 0)
    assert native["done_reason"] == "length"
    assert native["logprobs"] == [item]
    assert native["eval_count"] == 0


def test_answers_that_make_no_sense_are_backend_errors() -> None:
    with pytest.raises(BackendError):
        up.chat_answer({"choices": []}, "m", 0, 0)
    bad_call = {"function": {"name": "f", "arguments": "{not json"}}
    with pytest.raises(BackendError):
        up.chat_answer({"choices": [{"message": {"tool_calls": [bad_call]}}]}, "m", 0, 0)
    with pytest.raises(BackendError):
        up.embed_answer({"data": [{"embedding": "x"}]}, "e", 0, 0)


def test_generate_answer_from_a_completion_and_from_a_chat() -> None:
    completion = {"choices": [{"text": " the fire", "finish_reason": "length"}], "usage": {"prompt_tokens": 2}}
    native = up.generate_answer(completion, "m", 0, 10)
    assert native["response"] == " the fire" and native["done_reason"] == "length"
    assert native["prompt_eval_count"] == 2 and native["total_duration"] == 10
    chat = {"choices": [{"message": {"content": "ok", "reasoning": "r"}, "finish_reason": "stop"}]}
    native = up.generate_answer(chat, "m", 0, 0)
    assert native["response"] == "ok" and native["thinking"] == "r" and native["done_reason"] == "stop"


def test_embed_answer_orders_normalises_and_cuts_to_dimensions() -> None:
    answer = {
        "data": [{"index": 1, "embedding": [0.0, 2.0, 0.0]}, {"index": 0, "embedding": [3.0, 4.0, 12.0]}],
        "usage": {"prompt_tokens": 7},
    }
    native = up.embed_answer(answer, "e", 0, 3)
    assert native["embeddings"] == [[3 / 13, 4 / 13, 12 / 13], [0.0, 1.0, 0.0]]
    assert native["prompt_eval_count"] == 7 and native["model"] == "e" and native["total_duration"] == 3
    cut = up.embed_answer(answer, "e", 0, 0, dimensions=2)["embeddings"]
    assert cut[0] == [0.6, 0.8] and all(math.isclose(sum(x * x for x in v), 1.0) for v in cut)


# ---------------------------------------------------------------- streams

# llama.cpp's own server, as seen here: a role chunk with null content, text deltas, the finish chunk, then usage.
LLAMA_CHAT_STREAM: list[dict[str, Any]] = [
    {"choices": [{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}], "created": 1},
    {"choices": [{"finish_reason": None, "index": 0, "delta": {"content": "Hello"}}], "created": 1},
    {"choices": [{"finish_reason": None, "index": 0, "delta": {"content": ", you"}}], "created": 1},
    {"choices": [{"finish_reason": "length", "index": 0, "delta": {}}], "created": 1},
    {
        "choices": [],
        "created": 1,
        "usage": {"completion_tokens": 4, "prompt_tokens": 31, "total_tokens": 35},
        "timings": {"prompt_n": 1, "prompt_ms": 28.0, "predicted_n": 4, "predicted_ms": 88.0},
    },
]


def test_chat_stream_gives_content_lines_then_a_done_line_with_the_last_chunks_usage() -> None:
    stream = ChatStreamToNative("smollm2:135m", started_ns=100)
    lines = [line for chunk in LLAMA_CHAT_STREAM for line in stream.feed(chunk)]
    assert [line["message"]["content"] for line in lines] == ["Hello", ", you"]
    assert all(line["done"] is False and line["model"] == "smollm2:135m" for line in lines)
    assert stream.finish_reason == "length"
    (done,) = stream.finish(now_ns=1_100)
    assert done["done"] is True and done["done_reason"] == "length"
    assert done["message"] == {"role": "assistant", "content": ""}
    assert (done["prompt_eval_count"], done["eval_count"], done["total_duration"]) == (31, 4, 1_000)
    assert done["eval_duration"] == 88_000_000
    assert done["created_at"] == "1970-01-01T00:00:01Z"


def test_chat_stream_assembles_tool_calls_split_across_chunks() -> None:
    def call(index: int, **function: str) -> dict[str, Any]:
        return {"choices": [{"delta": {"tool_calls": [{"index": index, "function": function}]}}]}

    stream = ChatStreamToNative("m", 0)
    chunks = [
        {
            "choices": [
                {
                    "delta": {
                        "role": "assistant",
                        "tool_calls": [{"index": 0, "id": "a", "function": {"name": "weather", "arguments": ""}}],
                    }
                }
            ]
        },
        call(0, arguments='{"ci'),
        call(1, name="clock", arguments='{"tz": '),
        call(0, arguments='ty": "Paris"}'),
        call(1, arguments='"CET"}'),
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}},
    ]
    assert [line for chunk in chunks for line in stream.feed(chunk)] == []
    calls_line, done = stream.finish(now_ns=0)
    assert calls_line["done"] is False
    assert calls_line["message"]["tool_calls"] == [
        {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
        {"function": {"name": "clock", "arguments": {"tz": "CET"}}},
    ]
    assert done["done_reason"] == "stop" and done["eval_count"] == 9


def test_chat_stream_thinking_and_logprobs_deltas() -> None:
    stream = ChatStreamToNative("m", 0)
    item = {"token": "a", "logprob": -1.0, "bytes": None, "top_logprobs": []}
    (line,) = stream.feed({"choices": [{"delta": {"reasoning_content": "hm"}, "logprobs": {"content": [item]}}]})
    assert line["message"] == {"role": "assistant", "content": "", "thinking": "hm"}
    assert line["logprobs"] == [item]


def test_an_error_event_mid_stream_is_a_backend_error() -> None:
    stream = ChatStreamToNative("m", 0)
    with pytest.raises(BackendError, match="slot unavailable"):
        stream.feed({"error": {"code": 500, "message": "slot unavailable"}})


def test_generate_stream_from_completion_chunks() -> None:
    stream = GenerateStreamToNative("m", 0)
    chunks: list[dict[str, Any]] = [
        {"choices": [{"text": " entering", "finish_reason": None}]},
        {"choices": [{"text": " a", "finish_reason": None}]},
        {"choices": [{"text": "", "finish_reason": "length"}], "usage": {"prompt_tokens": 2, "completion_tokens": 2}},
    ]
    lines = [line for chunk in chunks for line in stream.feed(chunk)]
    assert [line["response"] for line in lines] == [" entering", " a"]
    (done,) = stream.finish(now_ns=0)
    assert done["response"] == "" and done["done"] is True and done["done_reason"] == "length"
    assert done["eval_count"] == 2


def test_generate_stream_from_chat_chunks() -> None:
    stream = GenerateStreamToNative("m", 0)
    lines = [line for chunk in LLAMA_CHAT_STREAM for line in stream.feed(chunk)]
    assert [line["response"] for line in lines] == ["Hello", ", you"]
    assert stream.finish(now_ns=0)[0]["prompt_eval_count"] == 31


def test_a_stream_without_usage_reports_zero_counts_not_an_error() -> None:
    stream = ChatStreamToNative("m", 0)
    stream.feed({"choices": [{"delta": {"content": "x"}, "finish_reason": "stop"}]})
    (done,) = stream.finish(now_ns=0)
    assert done["prompt_eval_count"] == 0 and done["eval_count"] == 0 and done["done_reason"] == "stop"
