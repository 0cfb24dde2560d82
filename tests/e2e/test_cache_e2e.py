"""The response cache end to end: the real engine answers, all-minilm embeds, the official clients replay.

all-MiniLM-L6-v2 scores the issue's paraphrase pair ("What is the capital of France?" / "what's France's
capital city?") at 0.944 and "...of Germany?" at 0.66; the gateways here use a threshold of 0.93 (the
default, 0.95, is deliberately conservative: see docs/CACHE.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import orjson
import pytest

from tests.e2e.conftest import start_gateway
from tests.support.processes import poll, stop

pytestmark = pytest.mark.e2e

MODEL = "smollm2:135m"
DETERMINISTIC = {"temperature": 0, "seed": 7, "num_predict": 8}
CACHE = "X-Shared-Ollama-Cache"


def ask(text: str, history: list[dict[str, str]] | None = None, **extra: object) -> dict[str, object]:
    messages = [*(history or []), {"role": "user", "content": text}]
    return {"model": MODEL, "messages": messages, "stream": False, "options": DETERMINISTIC, **extra}


@pytest.fixture(scope="module")
def gateway(
    engine_url: str, model_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    url, proc = start_gateway(
        model_store,
        tmp_path_factory.mktemp("gw-cache"),
        artifacts_dir / "gateway-cache.log",
        env={
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": engine_url,
            "SHARED_OLLAMA_CACHE_SEMANTIC_THRESHOLD": "0.93",
        },
    )
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=120) as client:
        yield client


def test_a_repeated_deterministic_request_is_a_hit_with_an_identical_body(http: httpx.Client) -> None:
    body = ask("Name a primary colour.")
    first = http.post("/api/chat", json=body, headers={"X-Shared-Ollama-Project": "exact"})
    second = http.post("/api/chat", json=body, headers={"X-Shared-Ollama-Project": "exact"})
    assert (first.headers[CACHE], second.headers[CACHE]) == ("miss", "hit")
    assert second.content == first.content
    stats = http.get("/api/v1/cache/stats").json()
    assert stats["hits"] >= 1 and stats["entries"] >= 1


def test_a_non_deterministic_request_is_not_cached(http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a word."}], "stream": False}
    body["options"] = {"num_predict": 4, "temperature": 0.9}
    for _ in range(2):
        resp = http.post("/api/chat", json=body)
        assert resp.status_code == 200
        assert CACHE not in resp.headers
    forced = http.post("/api/chat", json=body, headers={CACHE: "exact"})
    assert forced.headers[CACHE] == "miss", "a client may opt in explicitly"
    assert http.post("/api/chat", json=body, headers={CACHE: "exact"}).headers[CACHE] == "hit"
    off = http.post("/api/chat", json=ask("Name a primary colour."), headers={CACHE: "off"})
    assert CACHE not in off.headers


def test_a_paraphrase_is_a_semantic_hit_only_when_opted_in_and_in_the_same_context(http: httpx.Client) -> None:
    semantic = {CACHE: "semantic", "X-Shared-Ollama-Project": "geo"}
    original = http.post("/api/chat", json=ask("What is the capital of France?"), headers=semantic)
    assert original.headers[CACHE] == "miss"
    paraphrase = http.post("/api/chat", json=ask("what's France's capital city?"), headers=semantic)
    assert paraphrase.headers[CACHE] == "semantic-hit"
    assert 0.93 <= float(paraphrase.headers["X-Shared-Ollama-Cache-Similarity"]) < 1
    assert paraphrase.json()["message"] == original.json()["message"]
    exact_only = http.post(
        "/api/chat", json=ask("what's France's capital city?"), headers={"X-Shared-Ollama-Project": "geo"}
    )
    assert exact_only.headers[CACHE] == "miss", "without opting in, only exact matches"
    unrelated = http.post("/api/chat", json=ask("What is the capital of Germany?"), headers=semantic)
    assert unrelated.headers[CACHE] == "miss"
    history = [{"role": "user", "content": "Let's talk about cheese."}, {"role": "assistant", "content": "Sure."}]
    other_turns = http.post("/api/chat", json=ask("What is the capital of France?", history), headers=semantic)
    assert other_turns.headers[CACHE] == "miss", "the same last message after other turns is another question"
    service = http.post(
        "/api/v1/chat",
        json={**ask("Which city is the capital of France?"), "cache": "semantic"},
        headers={"X-Shared-Ollama-Project": "geo"},
    )
    assert service.headers[CACHE] == "semantic-hit", "the service API's body field opts in too"


def test_one_tenants_entries_are_invisible_to_another(http: httpx.Client) -> None:
    body = ask("Name a fruit.")
    assert http.post("/api/chat", json=body, headers={"X-Shared-Ollama-Project": "tenant-a"}).headers[CACHE] == "miss"
    assert http.post("/api/chat", json=body, headers={"X-Shared-Ollama-Project": "tenant-a"}).headers[CACHE] == "hit"
    assert http.post("/api/chat", json=body, headers={"X-Shared-Ollama-Project": "tenant-b"}).headers[CACHE] == "miss"


def test_streamed_replays_are_valid_for_the_official_clients(gateway: str, http: httpx.Client) -> None:
    body = ask("Name an animal.")
    stored = http.post("/api/chat", json=body).json()
    with http.stream("POST", "/api/chat", json={**body, "stream": True}) as resp:
        assert resp.headers[CACHE] == "hit"
        chunks = [orjson.loads(line) for line in resp.iter_lines() if line]
    assert "".join(c["message"]["content"] for c in chunks) == stored["message"]["content"]
    assert chunks[-1]["done"] is True and chunks[-1]["eval_count"] == stored["eval_count"]
    client = ollama.Client(host=gateway)
    streamed = client.chat(model=MODEL, messages=body["messages"], options=DETERMINISTIC, stream=True)
    assert "".join(part.message.content or "" for part in streamed) == stored["message"]["content"]
    sdk = openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)
    completion = dict(
        model=MODEL, messages=[{"role": "user", "content": "Name a tool."}], max_tokens=8, temperature=0, seed=7
    )
    whole = sdk.chat.completions.create(**completion)  # type: ignore[call-overload]
    events = sdk.chat.completions.create(**completion, stream=True)  # type: ignore[call-overload]
    text = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    assert text == whole.choices[0].message.content


def test_entries_expire_after_their_ttl(
    engine_url: str, model_store: Path, artifacts_dir: Path, tmp_path: Path
) -> None:
    url, proc = start_gateway(
        model_store,
        tmp_path,
        artifacts_dir / "gateway-cache-ttl.log",
        env={
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": engine_url,
            "SHARED_OLLAMA_CACHE_TTL_SECONDS": "3",
        },
    )
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            body = ask("Name a planet.")
            assert http.post("/api/chat", json=body).headers[CACHE] == "miss"
            assert http.post("/api/chat", json=body).headers[CACHE] == "hit"
            poll(lambda: http.post("/api/chat", json=body).headers[CACHE] == "miss", "the entry expired")
    finally:
        stop(proc)


def test_redis_backed_hits_across_two_gateway_processes(
    engine_url: str, model_store: Path, artifacts_dir: Path, tmp_path: Path, redis_url: str
) -> None:
    env = {
        "SHARED_OLLAMA_ENGINE": "external",
        "SHARED_OLLAMA_OLLAMA_URL": engine_url,
        "SHARED_OLLAMA_REDIS_URL": redis_url,
    }
    first, proc1 = start_gateway(model_store, tmp_path / "one", artifacts_dir / "gateway-cache-r1.log", env=env)
    try:
        second, proc2 = start_gateway(model_store, tmp_path / "two", artifacts_dir / "gateway-cache-r2.log", env=env)
        try:
            body = ask("Name a river.")
            one = httpx.post(f"{first}/api/chat", json=body, timeout=120)
            two = httpx.post(f"{second}/api/chat", json=body, timeout=120)
            assert (one.headers[CACHE], two.headers[CACHE]) == ("miss", "hit")
            assert two.content == one.content
            stats = httpx.get(f"{second}/api/v1/cache/stats").json()
            assert stats["store"] == "redis" and stats["hits"] == 1
            purged = httpx.delete(f"{first}/api/v1/cache", params={"tenant": "default"}).json()
            assert purged["removed"] >= 1
            assert httpx.post(f"{second}/api/chat", json=body, timeout=120).headers[CACHE] == "miss"
        finally:
            stop(proc2)
    finally:
        stop(proc1)
