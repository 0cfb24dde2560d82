"""llama.cpp's answers in Ollama's shapes: whole results, stream chunks, thinking and log probabilities."""

from __future__ import annotations

import re
from typing import Any

from shared_ollama.engine.answers import (
    Accumulator,
    chunk_text,
    content_payload,
    created_at,
    final_fields,
    ollama_logprobs,
    piece,
    response,
)

RESULT = {
    "choices": [{"message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3},
    "timings": {"prompt_n": 12, "prompt_ms": 4.5, "predicted_n": 3, "predicted_ms": 30.25},
}


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


def test_the_reused_part_of_the_prompt_is_reported_beside_the_whole_prompt() -> None:
    reused = {"usage": {"prompt_tokens": 900}, "timings": {"prompt_n": 50, "cache_n": 850}}
    fields = final_fields(reused, None, 0, 0)
    assert (fields["prompt_eval_count"], fields["prompt_eval_cached_count"]) == (900, 850)
    without_usage = final_fields({"timings": {"prompt_n": 50, "cache_n": 850}}, None, 0, 0)
    assert (without_usage["prompt_eval_count"], without_usage["prompt_eval_cached_count"]) == (900, 850)
    details = final_fields({"usage": {"prompt_tokens": 40, "prompt_tokens_details": {"cached_tokens": 32}}}, None, 0, 0)
    assert details["prompt_eval_cached_count"] == 32
    assert final_fields(RESULT, None, 0, 0)["prompt_eval_cached_count"] == 0


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


def test_a_tool_call_result_comes_back_with_object_arguments_and_counts() -> None:
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


LLAMA_TOKEN = {
    "id": 59,
    "token": "K",
    "bytes": [75],
    "logprob": -4.568094253540039,
    "top_logprobs": [
        {"id": 57, "token": "I", "bytes": [73], "logprob": -2.2564542293548584},
        {"id": 19556, "token": "Hello", "bytes": [72, 101, 108, 108, 111], "logprob": -2.3952271938323975},
    ],
}
"""One item of llama.cpp's ``logprobs.content``, as xllamacpp answered for SmolLM2 here."""


def test_llama_logprobs_become_ollamas() -> None:
    assert ollama_logprobs([LLAMA_TOKEN], 0) == [{"token": "K", "logprob": -4.568094253540039, "bytes": [75]}]
    one = ollama_logprobs([LLAMA_TOKEN], 1)
    assert one == [
        {
            "token": "K",
            "logprob": -4.568094253540039,
            "bytes": [75],
            "top_logprobs": [{"token": "I", "logprob": -2.2564542293548584, "bytes": [73]}],
        }
    ]
    assert len(ollama_logprobs([LLAMA_TOKEN], 20)[0]["top_logprobs"]) == 2
    assert ollama_logprobs(None, 3) == [] and ollama_logprobs(["junk"], 3) == []


def test_reasoning_content_becomes_thinking_in_chat_and_generate_answers() -> None:
    result = {
        "choices": [
            {
                "message": {"role": "assistant", "content": "Blue.", "reasoning_content": "Light scatters."},
                "finish_reason": "stop",
                "logprobs": {"content": [LLAMA_TOKEN]},
            }
        ]
    }
    chat = response("chat", "m", result, 0, 0)
    assert chat["message"] == {"role": "assistant", "content": "Blue.", "thinking": "Light scatters."}
    assert "logprobs" not in chat, "log probabilities only when the request asked for them"
    generated = response("generate", "m", result, 0, 0, top=0)
    assert (generated["response"], generated["thinking"]) == ("Blue.", "Light scatters.")
    assert generated["logprobs"] == [{"token": "K", "logprob": -4.568094253540039, "bytes": [75]}]


def test_stream_pieces_carry_thinking_and_logprobs() -> None:
    thought = piece({"choices": [{"delta": {"reasoning_content": "\nThe"}, "finish_reason": None}]})
    assert (thought.text, thought.thinking) == ("", "\nThe")
    said = piece({"choices": [{"delta": {"content": "K"}, "logprobs": {"content": [LLAMA_TOKEN]}}]})
    assert (said.text, said.logprobs) == ("K", [LLAMA_TOKEN])
    completion = piece({"choices": [{"text": " the", "logprobs": None, "finish_reason": "length"}]})
    assert (completion.text, completion.logprobs, completion.finish) == (" the", [], "length")
    payload = content_payload("chat", "K", thinking="hm", logprobs=[{"token": "K", "logprob": -1.0}])
    assert payload == {
        "message": {"role": "assistant", "content": "K", "thinking": "hm"},
        "logprobs": [{"token": "K", "logprob": -1.0}],
    }
    assert content_payload("generate", "", thinking="hm") == {"response": "", "thinking": "hm"}


def test_accumulated_thinking_and_logprobs_equal_a_whole_answer() -> None:
    acc = Accumulator()
    acc.feed({"choices": [{"delta": {"role": "assistant", "content": None}}]})
    acc.feed({"choices": [{"delta": {"reasoning_content": "Light "}, "logprobs": {"content": [LLAMA_TOKEN]}}]})
    acc.feed({"choices": [{"delta": {"reasoning_content": "scatters."}}]})
    acc.feed({"choices": [{"delta": {"content": "Blue."}, "logprobs": {"content": [LLAMA_TOKEN]}}]})
    acc.feed({"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": {"completion_tokens": 3}})
    out = response("chat", "m", acc.result(), 0, 0, top=1)
    assert out["message"] == {"role": "assistant", "content": "Blue.", "thinking": "Light scatters."}
    assert [t["token"] for t in out["logprobs"]] == ["K", "K"]
    assert out["eval_count"] == 3
