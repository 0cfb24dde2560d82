"""The prompt check before admission against the scripted engine: a huge prompt is refused without the engine's
tokenizer, and a tokenizer that fails leaves the estimate (a client's prompt never becomes a 502)."""

from __future__ import annotations

import httpx
import orjson

from tests.support.fake_engine import FakeEngine


def tokenize_calls(engine: FakeEngine) -> int:
    return sum(1 for r in engine.received if r["path"] == "/api/tokenize")


async def test_a_huge_chat_is_refused_without_counting(
    gateway: httpx.AsyncClient, fake_engine: tuple[str, FakeEngine]
) -> None:
    engine = fake_engine[1]
    before = tokenize_calls(engine)
    body = {"model": "fake", "messages": [{"role": "user", "content": "x"}] * 45_000}
    raw = orjson.dumps(body)
    assert 1_300_000 < len(raw) < 1_572_864, "the issue's size, under the body limit"
    resp = await gateway.post("/api/chat", content=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    answer = resp.json()
    assert answer["code"] == "prompt_too_large"
    assert "45000 messages" in answer["error"]
    assert tokenize_calls(engine) == before, "refused without asking the engine's tokenizer"


async def test_a_tokenizer_error_leaves_the_estimate_not_a_502(
    gateway: httpx.AsyncClient, fake_engine: tuple[str, FakeEngine]
) -> None:
    engine = fake_engine[1]
    before = tokenize_calls(engine)
    long_text = "word " * 4000  # 20,000 bytes: over 4,096 tokens by the estimate, under the byte bound
    # ``fault-500`` makes every engine path answer 500, the tokenizer included
    resp = await gateway.post(
        "/api/chat", json={"model": "fault-500", "messages": [{"role": "user", "content": long_text}]}
    )
    assert tokenize_calls(engine) == before + 1, "the engine's tokenizer was asked, and failed"
    assert resp.status_code == 400, resp.text
    answer = resp.json()
    assert answer["code"] == "prompt_too_large"
    assert "estimated" in answer["error"]
