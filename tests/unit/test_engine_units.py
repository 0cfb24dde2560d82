"""Embedded engine helpers: keep_alive durations, request translation, the model store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared_ollama.engine.durations import keep_alive_seconds, parse_duration
from shared_ollama.engine.store import ModelEntry, ModelStore, normalize_name
from shared_ollama.engine.translate import (
    TranslationError,
    chat_request,
    chunk_text,
    created_at,
    generate_request,
    response,
    sampling,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("300ms", 0.3), ("10", 10), ("-1", -1), ("-1m", -60), ("1.5s", 1.5), ("0", 0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m", "5m3", "1h-2m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_keep_alive_semantics() -> None:
    assert keep_alive_seconds(None, "5m") == 300
    assert keep_alive_seconds(30, "5m") == 30
    assert keep_alive_seconds(-1, "5m") is None
    assert keep_alive_seconds("-5m", "5m") is None
    assert keep_alive_seconds(0, "5m") == 0
    assert keep_alive_seconds("0s", "5m") == 0


def entry(**kwargs: object) -> ModelEntry:
    values: dict[str, object] = {"name": "m:latest", "digest": "sha256:00", "size": 1, "capabilities": ["completion"]}
    values.update(kwargs)
    return ModelEntry(**values)  # type: ignore[arg-type]


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


def test_names() -> None:
    assert normalize_name("all-minilm") == "all-minilm:latest"
    assert normalize_name("library/smollm2:135m") == "library/smollm2:135m"
    for bad in ("", "../etc:x", "a b", ":tag"):
        with pytest.raises(ValueError):
            normalize_name(bad)


def test_store_round_trip_and_shared_blobs(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    blob = tmp_path / "src.bin"
    blob.write_bytes(b"weights")
    digest, size = store.add_blob(blob)
    assert size == 7
    assert store.add_blob(blob) == (digest, size)
    store.put(entry(name="a:latest", digest=digest, size=size))
    store.put(entry(name="b:v1", digest=digest, size=size, system="hi"))
    assert [e.name for e in store.list()] == ["a:latest", "b:v1"]
    got = store.get("b:v1")
    assert got is not None
    assert got.system == "hi"
    assert store.get("a") is not None
    assert store.get("../../x") is None
    assert store.remove("a")
    assert store.blob_path(digest).exists()  # still used by b:v1
    assert store.remove("b:v1")
    assert not store.blob_path(digest).exists()
    assert not store.remove("b:v1")
