"""Replay of a stored answer as an NDJSON stream, and a stream aggregated back into the answer."""

from __future__ import annotations

import orjson

from shared_ollama.service.cache.replay import aggregate_ndjson, replay_ndjson
from tests.support.cache import answer

# --- streams


def test_replay_chat_stream() -> None:
    content = "Paris is the capital of France. It sits on the Seine, and about two million people live there."
    body = orjson.loads(answer(content))
    body["message"]["thinking"] = "The user asks about geography."
    lines = replay_ndjson(body, "chat")
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    chunks = [orjson.loads(line) for line in lines]
    assert len(chunks) >= 4
    assert "".join(c["message"]["content"] for c in chunks) == content
    assert "".join(c["message"].get("thinking", "") for c in chunks) == body["message"]["thinking"]
    assert all(c["done"] is False for c in chunks[:-1])
    final = chunks[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert (final["eval_count"], final["prompt_eval_count"], final["total_duration"]) == (7, 12, 1_000_000)
    assert final["message"] == {"role": "assistant", "content": ""}
    assert all(c["model"] == "smollm2:135m" and c["created_at"] for c in chunks)
    assert orjson.loads(aggregate_ndjson(lines, "chat")) == body


def test_replay_generate_stream_and_tool_calls() -> None:
    body = {"model": "m", "created_at": "t", "response": "Once upon a time", "done": True, "done_reason": "stop"}
    body |= {"context": [1, 2, 3], "eval_count": 4}
    chunks = [orjson.loads(line) for line in replay_ndjson(body, "generate", pieces=2)]
    assert "".join(c["response"] for c in chunks) == "Once upon a time"
    assert len(chunks) == 3
    assert chunks[-1]["done"] is True and chunks[-1]["context"] == [1, 2, 3] and chunks[-1]["response"] == ""
    assert orjson.loads(aggregate_ndjson(replay_ndjson(body, "generate"), "generate")) == body
    calls = [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}]
    tool = orjson.loads(answer(""))
    tool["message"]["tool_calls"] = calls
    chunks = [orjson.loads(line) for line in replay_ndjson(tool, "chat")]
    assert [c["message"].get("tool_calls") for c in chunks] == [calls, None]
    assert chunks[-1]["done"] is True
    empty = [orjson.loads(line) for line in replay_ndjson(orjson.loads(answer("")), "chat")]
    assert len(empty) == 1 and empty[0]["done"] is True


def test_aggregate_refuses_unfinished_or_failed_streams() -> None:
    lines = replay_ndjson(orjson.loads(answer()), "chat")
    assert aggregate_ndjson(lines[:-1], "chat") is None
    assert aggregate_ndjson([*lines[:2], b'{"error": "boom"}\n'], "chat") is None


def test_streamed_logprobs_are_gathered_and_replayed_on_the_final_chunk() -> None:
    token = {"token": "Pa", "logprob": -0.1, "bytes": [80, 97]}
    lines = [
        orjson.dumps(
            {"model": "m", "message": {"role": "assistant", "content": "Pa"}, "logprobs": [token], "done": False}
        ),
        orjson.dumps(
            {"model": "m", "message": {"role": "assistant", "content": "ris"}, "logprobs": [token], "done": False}
        ),
        orjson.dumps({"model": "m", "message": {"role": "assistant", "content": ""}, "done": True, "eval_count": 2}),
    ]
    whole = orjson.loads(aggregate_ndjson(lines, "chat"))
    assert whole["message"]["content"] == "Paris"
    assert whole["logprobs"] == [token, token], "a cached answer keeps the log probabilities a client asked for"
    replayed = [orjson.loads(line) for line in replay_ndjson(whole, "chat")]
    assert [t for c in replayed for t in c.get("logprobs", [])] == [token, token]
