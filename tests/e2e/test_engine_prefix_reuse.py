"""The embedded engine reuses each conversation's prefix across turns, with another conversation in between, and
says so on the final answer: ``prompt_eval_count`` is the whole prompt, ``prompt_eval_cached_count`` the part of it
llama.cpp did not evaluate again."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

CHAT = "smollm2:135m"
NOTES = ("harbor", "lantern", "copper", "meadow", "falcon", "quartz", "velvet", "canyon", "ember", "willow")


@pytest.fixture(scope="module")
def http(engine_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=engine_url, timeout=120) as client:
        yield client


def _opening(name: str, seed: int) -> list[dict[str, str]]:
    """A conversation's first turn: ~300 tokens that no other conversation shares."""
    rng = random.Random(seed)
    notes = " ".join(rng.choice(NOTES) for _ in range(220))
    return [
        {"role": "system", "content": f"Conversation {name}. Answer in one sentence."},
        {"role": "user", "content": f"Summarise these notes: {notes}."},
    ]


def _chat(http: httpx.Client, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
    """The final answer (streamed: the last line, with the text of the whole stream as its message)."""
    body = {"model": CHAT, "messages": messages, "stream": stream, "options": {"num_predict": 8, "temperature": 0}}
    if not stream:
        reply = http.post("/api/chat", json=body)
        assert reply.status_code == 200, reply.text
        return dict(reply.json())
    with http.stream("POST", "/api/chat", json=body) as reply:
        assert reply.status_code == 200
        lines = [json.loads(line) for line in reply.iter_lines() if line.strip()]
    final = lines[-1]
    assert final["done"] is True
    final["message"]["content"] = "".join(line["message"]["content"] for line in lines)
    return dict(final)


def test_interleaved_conversations_each_reuse_their_own_prefix(http: httpx.Client) -> None:
    a, b = _opening("A", 1), _opening("B", 2)
    first = {"A": _chat(http, a, stream=False), "B": _chat(http, b, stream=False)}
    for answer in first.values():
        assert answer["prompt_eval_count"] > 250
    for conversation, answer in ((a, first["A"]), (b, first["B"])):
        conversation.append({"role": "assistant", "content": answer["message"]["content"]})
        conversation.append({"role": "user", "content": "Now say it in one word."})
    second = {"A": _chat(http, a, stream=True), "B": _chat(http, b, stream=False)}  # both answer shapes
    for name, answer in second.items():
        total, reused = answer["prompt_eval_count"], answer["prompt_eval_cached_count"]
        assert total > first[name]["prompt_eval_count"], name  # the whole prompt, as Ollama counts it
        assert reused >= first[name]["prompt_eval_count"] * 0.9, (name, answer)
        assert total - reused < total // 4, (name, answer)  # only the new turn was evaluated
