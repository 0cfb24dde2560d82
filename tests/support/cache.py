"""Requests, answers and entries for the response cache's tests, and a deterministic fake embedding."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import orjson

from shared_ollama.service.cache.memory_store import Entry


def chat(*turns: str, **extra: object) -> dict:
    """A chat request whose messages alternate user / assistant, ending with the last user turn."""
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]
    return {"model": "smollm2:135m", "messages": messages, "options": {"temperature": 0}, **extra}


def answer(content: str = "Paris is the capital of France.", **extra: object) -> bytes:
    body = {
        "model": "smollm2:135m",
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "total_duration": 1_000_000,
        "prompt_eval_count": 12,
        "eval_count": 7,
        "eval_duration": 500_000,
        **extra,
    }
    return orjson.dumps(body)


def entry(body: bytes = b"{}", tenant: str = "web", model: str = "m") -> Entry:
    return Entry(body=body, model=model, tenant=tenant, kind="chat", created=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


async def bag_of_words(text: str) -> list[float]:
    """A deterministic fake embedding: word counts hashed into 512 buckets."""
    vec = [0.0] * 512
    for word in _words(text):
        vec[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % 512] += 1.0
    return vec


def cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


QUESTION = "tell me the capital city of france"
PARAPHRASE = "please tell me the capital city of france"
UNRELATED = "how do I bake a sourdough bread at home"
