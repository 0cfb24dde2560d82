"""``PassThrough``: an ``openai`` host's own answer kept for the OpenAI surface (``upstream_openai_pass.py``)."""

from __future__ import annotations

import orjson

from shared_ollama.protocol.upstream_openai_pass import PassThrough


def chunk(content: str | None = None, *, finish: str | None = None, usage: object = "absent") -> dict[str, object]:
    out: dict[str, object] = {
        "id": "chatcmpl-host",
        "model": "Org/Model-GGUF",
        "system_fingerprint": "b1-host",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }
    if usage != "absent":
        out["usage"] = usage
    return out


def events(frames: bytes) -> list[dict[str, object]]:
    parts = [p for p in frames.split(b"\n\n") if p]
    assert all(p.startswith(b"data: ") for p in parts)
    return [orjson.loads(p[len(b"data: ") :]) for p in parts]


def test_chunks_go_out_as_the_host_sent_them_but_for_the_model_name() -> None:
    kept = PassThrough(model="qwen3:8b")
    assert not kept.used and kept.frames() == b""
    kept.keep_chunk(chunk("Hel"))
    kept.keep_chunk(chunk("lo"))
    assert kept.used
    sent = events(kept.frames())
    assert [e["choices"][0]["delta"]["content"] for e in sent] == ["Hel", "lo"]  # type: ignore[index]
    assert {e["model"] for e in sent} == {"qwen3:8b"} and {e["id"] for e in sent} == {"chatcmpl-host"}
    assert {e["system_fingerprint"] for e in sent} == {"b1-host"}
    assert kept.frames() == b"", "each chunk is sent once"


def test_the_usage_the_gateway_asked_for_is_left_out_unless_the_client_asked_too() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    quiet = PassThrough(model="m")
    quiet.keep_chunk(chunk("a", usage=None))
    quiet.keep_chunk(chunk(finish="stop"))
    quiet.keep_chunk({"id": "x", "model": "h", "choices": [], "usage": usage, "timings": {"n": 1}})
    sent = events(quiet.frames())
    assert len(sent) == 2 and all("usage" not in e for e in sent)
    asked = PassThrough(model="m", include_usage=True)
    asked.keep_chunk(chunk("a", usage=None))
    asked.keep_chunk({"id": "x", "model": "h", "choices": [], "usage": usage, "timings": {"n": 1}})
    sent = events(asked.frames())
    assert sent[-1]["usage"] == usage and sent[-1]["timings"] == {"n": 1} and sent[-1]["model"] == "m"


def test_a_whole_answer_keeps_its_fields_and_takes_the_clients_model_name() -> None:
    kept = PassThrough(model="qwen3:8b")
    kept.keep_answer({"id": "chatcmpl-host", "model": "Org/Model", "choices": [], "timings": {"predicted_n": 4}})
    assert kept.used
    assert orjson.loads(kept.body()) == {
        "id": "chatcmpl-host",
        "model": "qwen3:8b",
        "choices": [],
        "timings": {"predicted_n": 4},
    }
