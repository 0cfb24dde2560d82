"""OpenAI chat stream frames: the written-out text chunk is byte for byte what the general conversion makes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from shared_ollama.protocol.convert import chat_chunk_from_native
from shared_ollama.protocol.openai_stream import ChatChunkFrames, sse_event

JsonDict = dict[str, Any]


def _text(content: object, model: object = "smollm2:135m", **extra: object) -> JsonDict:
    return {"model": model, "created_at": "2026-01-01T00:00:00Z", "message": {"role": "assistant", "content": content},
            "done": False, **extra}  # fmt: skip


_CALL = {"function": {"name": "f", "arguments": {"x": 1}}}
FINAL = {
    "model": "smollm2:135m",
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 5,
    "eval_count": 3,
}
STREAMS: dict[str, list[JsonDict]] = {
    "plain text": [_text("Hel"), _text("lo"), _text(" there"), FINAL],
    "text that needs escaping": [_text("a"), _text('"quoted"\n\tand \\ back'), _text("é ✓ 😀 \u2028"), FINAL],
    "an empty piece mid-stream": [_text("a"), _text(""), _text("b"), FINAL],
    "the model name changes": [_text("a"), _text("b", model="other"), _text("c", model='we"ird'), FINAL],
    "no model": [_text("a"), {"message": {"content": "b"}, "done": False}, FINAL],
    "a non-text model name": [_text("a"), _text("b", model=7), _text("c", model=7.0), FINAL],
    "text then content that is not text": [_text("a"), _text(12), _text(["x"]), FINAL],
    "log probabilities": [
        _text("a", logprobs=[{"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": []}]),
        _text("b", logprobs=[{"token": "b", "logprob": -0.1, "bytes": [98], "top_logprobs": []}]),
        _text("c", logprobs=[]),
        FINAL,
    ],
    "tool calls": [
        _text("a"),
        {"model": "m", "message": {"content": "", "tool_calls": [_CALL]}, "done": False},
        {**FINAL, "message": {"content": "", "tool_calls": [{"function": {"name": "g", "arguments": {}}}]}},
    ],
    "a final chunk with text": [_text("a"), {**FINAL, "message": {"content": "end"}}],
    "a message that is not an object": [_text("a"), {"model": "m", "message": None, "done": False}, FINAL],
}


def _general(stream: list[JsonDict], *, usage: bool) -> list[bytes]:
    out = []
    for i, native in enumerate(stream):
        events = chat_chunk_from_native(native, request_id="r-1", created=1700, first=i == 0, include_usage=usage)
        out.append(b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events))
    return out


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_frames_are_the_general_conversions_bytes(name: str, include_usage: bool) -> None:
    stream = STREAMS[name]
    frames = ChatChunkFrames(request_id="r-1", created=1700, include_usage=include_usage)
    assert [frames(native) for native in stream] == _general(stream, usage=include_usage)


def test_a_text_chunk_parses_as_the_chunk_the_sdk_reads() -> None:
    frames = ChatChunkFrames(request_id="r-1", created=1700, include_usage=False)
    frames(_text("first"))
    frame = frames(_text('say "hi"'))
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    assert orjson.loads(frame[len(b"data: ") :]) == {
        "id": "chatcmpl-r-1",
        "object": "chat.completion.chunk",
        "created": 1700,
        "model": "smollm2:135m",
        "system_fingerprint": "fp_shared_ollama",
        "choices": [{"index": 0, "delta": {"content": 'say "hi"'}, "finish_reason": None}],
    }


def test_sse_event_frames_one_event() -> None:
    assert sse_event({"a": 1}) == b'data: {"a":1}\n\n'
