"""The Python client's wire helpers: request bodies (unset fields not sent, names in paths), images as base64,
and the decoding of NDJSON and SSE streams with their error frames and their ends."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from shared_ollama_client import _calls
from shared_ollama_client._wire import Call, Decoder, encode_images, headers
from shared_ollama_client.errors import (
    BackendUnavailable,
    ConnectionFailed,
    InvalidResponse,
    QueueFull,
    RateLimited,
    TenantBusy,
)

NDJSON_CHAT = _calls.chat(
    "m", [], poml=None, context=None, options=None, stream=True, format=None, tools=None, keep_alive=None,
    think=None, cache=None, extra=None,
)  # fmt: skip
SSE = Call("POST", "/x", stream=True, sse=True)


def test_unset_fields_are_not_sent_and_set_ones_keep_the_native_names() -> None:
    call = _calls.chat(
        "smollm2:135m",
        [{"role": "user", "content": "Hi"}],
        poml=None,
        context=None,
        options={"num_predict": 4},
        stream=False,
        format="json",
        tools=None,
        keep_alive="5m",
        think=None,
        cache="off",
        extra={"logprobs": True},
    )
    assert (call.method, call.path, call.stream) == ("POST", "/api/v1/chat", False)
    assert call.body == {
        "model": "smollm2:135m",
        "messages": [{"role": "user", "content": "Hi"}],
        "options": {"num_predict": 4},
        "stream": False,
        "format": "json",
        "keep_alive": "5m",
        "cache": "off",
        "logprobs": True,
    }


def test_model_names_keep_their_slashes_and_colons_in_paths() -> None:
    assert _calls.models_show("hf.co/owner/repo:Q4_K_M").path == "/api/v1/models/hf.co/owner/repo:Q4_K_M/show"
    assert _calls.models_delete("a b").path == "/api/v1/models/a%20b"
    assert _calls.models_delete("x").resend is False, "a change is not sent twice after a lost answer"
    run = _calls.agents_run("calc", "2+2?", messages=None, stream=False, max_steps=None, session=None)
    assert run.resend is False, "an agent run (its tools act) is not sent twice after a lost answer"
    assert _calls.health().retry is False


def test_headers_name_the_project_the_user_and_the_key() -> None:
    assert headers("proj", "sk-1", "alice") == {
        "Accept": "application/json",
        "X-Shared-Ollama-Project": "proj",
        "X-Shared-Ollama-User": "alice",
        "Authorization": "Bearer sk-1",
    }
    assert headers(None, None, None) == {"Accept": "application/json"}


def test_images_are_sent_as_base64_from_bytes_or_from_a_path(tmp_path: Path) -> None:
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG-file")
    encoded = encode_images([b"raw-bytes", picture, str(picture)])
    assert [base64.b64decode(e) for e in encoded] == [b"raw-bytes", b"\x89PNG-file", b"\x89PNG-file"]
    with pytest.raises(FileNotFoundError):
        encode_images([tmp_path / "missing.png"])


def test_ndjson_chunks_until_the_done_chunk() -> None:
    decoder = Decoder(NDJSON_CHAT, "rid")
    assert decoder.feed("") is None
    assert decoder.feed('{"message": {"content": "He"}, "done": false}') == {
        "message": {"content": "He"},
        "done": False,
    }
    assert not decoder.ended
    assert decoder.feed('{"done": true, "eval_count": 2}') == {"done": True, "eval_count": 2}
    assert decoder.ended
    decoder.finish()


def test_a_stream_cut_before_its_last_chunk_is_a_connection_failure() -> None:
    decoder = Decoder(NDJSON_CHAT, "rid")
    decoder.feed('{"message": {"content": "He"}, "done": false}')
    with pytest.raises(ConnectionFailed) as cut:
        decoder.finish()
    assert cut.value.request_id == "rid"
    Decoder(Call("POST", "/x", stream=True), None).finish()  # a stream with no last chunk to wait for


def test_a_native_error_frame_raises_its_typed_error() -> None:
    decoder = Decoder(NDJSON_CHAT, "header-id")
    frame = '{"error": "engine restarting", "code": "backend_unavailable", "retry_after": 2.0, "request_id": "r9"}'
    with pytest.raises(BackendUnavailable) as failed:
        decoder.feed(frame)
    assert (failed.value.status, failed.value.retry_after, failed.value.request_id) == (503, 2.0, "r9")


def test_an_agent_error_event_raises_but_a_done_event_reporting_an_error_does_not() -> None:
    decoder = Decoder(Call("POST", "/run", stream=True), None)
    done = decoder.feed('{"type": "done", "error": {"code": "request_timeout"}, "output": ""}')
    assert done is not None and done["type"] == "done"
    with pytest.raises(QueueFull):
        decoder.feed('{"type": "error", "error": "queue is full", "code": "queue_full", "retry_after": 1}')


def test_sse_events_until_done_and_an_openai_error_event() -> None:
    decoder = Decoder(SSE, None)
    assert decoder.feed(": keep-alive") is None
    assert decoder.feed('data: {"choices": [{"delta": {"content": "Hi"}}]}') is None
    assert decoder.feed("") == {"choices": [{"delta": {"content": "Hi"}}]}
    assert decoder.feed("data: [DONE]") is None
    assert decoder.feed("") is None
    assert decoder.ended
    decoder.finish()

    failing = Decoder(SSE, None)
    failing.feed('data: {"error": {"message": "over quota", "type": "rate_limit_error", "code": "rate_limited",')
    failing.feed('data:  "retry_after": 30}}')
    with pytest.raises(RateLimited) as limited:
        failing.feed("")
    assert limited.value.retry_after == 30


def test_sse_without_done_is_cut_off() -> None:
    decoder = Decoder(SSE, None)
    decoder.feed('data: {"error": {"message": "busy", "code": "tenant_busy"}}')
    with pytest.raises(TenantBusy):
        decoder.finish()
    with pytest.raises(ConnectionFailed):
        Decoder(SSE, None).finish()


def test_a_chunk_that_is_not_json_is_an_invalid_response() -> None:
    with pytest.raises(InvalidResponse):
        Decoder(NDJSON_CHAT, None).feed("<html>")
    with pytest.raises(InvalidResponse):
        Decoder(NDJSON_CHAT, None).feed("[1, 2]")
