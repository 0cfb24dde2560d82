"""The embedded engine alone, with the real models: Ollama's API as Ollama's clients see it."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import ollama
import pytest

from shared_ollama.backends.client import EngineClient
from shared_ollama.engine.store import ModelStore
from shared_ollama.errors import ModelNotFound
from shared_ollama.settings import Settings
from tests.support.processes import free_port, poll, spawn, stop, wait_http_ok

pytestmark = pytest.mark.e2e

CHAT = "smollm2:135m"
EMBED = "all-minilm"
HI = [{"role": "user", "content": "Say hello."}]
NUMBERS = [{"role": "user", "content": "List the numbers from 1 to 1000."}]
LONG = {"type": "array", "items": {"type": "integer"}, "minItems": 1000}  # an answer that cannot end early


@pytest.fixture(scope="module")
def http(engine_url: str) -> httpx.Client:
    with httpx.Client(base_url=engine_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def client(engine_url: str) -> ollama.Client:
    return ollama.Client(host=engine_url)


def test_version_tags_show(http: httpx.Client, client: ollama.Client) -> None:
    assert http.get("/").text == "Ollama is running"
    assert http.get("/api/version").json()["version"]
    names = {m.model for m in client.list().models}
    assert {"smollm2:135m", "all-minilm:latest"} <= names
    shown = client.show(CHAT)
    assert shown.capabilities == ["completion"]
    assert shown.details.family == "llama"
    assert shown.modelinfo["llama.context_length"] == 8192
    assert client.show(EMBED).capabilities == ["embedding"]


def test_num_predict_limits_and_reports_length(client: ollama.Client) -> None:
    resp = client.chat(model=CHAT, messages=HI, options={"num_predict": 5})
    assert resp.eval_count <= 5
    assert resp.done_reason == "length"
    assert resp.prompt_eval_duration > 0
    assert resp.eval_duration > 0


def test_seed_and_zero_temperature_are_reproducible(client: ollama.Client) -> None:
    opts = {"num_predict": 16, "temperature": 0, "seed": 42}
    first = client.generate(model=CHAT, prompt="List three fruits.", options=opts).response
    second = client.generate(model=CHAT, prompt="List three fruits.", options=opts).response
    assert first == second
    assert first.strip()


def test_format_schema_constrains_output(client: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "maximum": 120}},
        "required": ["name", "age"],
    }
    resp = client.chat(
        model=CHAT,
        messages=[{"role": "user", "content": "Invent a person."}],
        format=schema,
        options={"temperature": 0, "num_predict": 100},
    )
    data = json.loads(resp.message.content)
    assert isinstance(data["name"], str)
    assert isinstance(data["age"], int)
    as_json = client.generate(
        model=CHAT, prompt="A JSON object about a cat.", format="json", options={"num_predict": 60, "temperature": 0}
    )
    assert as_json.response.lstrip().startswith("{")


def test_embed_vectors_are_unit_length_and_meaningful(client: ollama.Client) -> None:
    texts = ["The cat sleeps on the sofa.", "A kitten naps on the couch.", "Quarterly tax filing deadlines."]
    vectors = client.embed(model=EMBED, input=texts).embeddings
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.3
    single = client.embed(model=EMBED, input=texts[0]).embeddings
    assert max(abs(x - y) for x, y in zip(single[0], vectors[0], strict=True)) < 1e-4
    legacy = client.embeddings(model=EMBED, prompt=texts[0]).embedding
    norm = math.sqrt(sum(x * x for x in legacy))
    assert norm > 1.5  # the legacy endpoint returns the raw pooled vector
    assert max(abs(x / norm - y) for x, y in zip(legacy, vectors[0], strict=True)) < 1e-4


def test_wrong_model_kind_is_a_400(http: httpx.Client) -> None:
    resp = http.post("/api/chat", json={"model": EMBED, "messages": HI, "stream": False})
    assert resp.status_code == 400
    resp = http.post("/api/embed", json={"model": CHAT, "input": "x"})
    assert resp.status_code == 400
    resp = http.post(
        "/api/chat", json={"model": CHAT, "messages": [{"role": "user", "content": "?", "images": ["AA"]}]}
    )
    assert resp.status_code == 400
    assert "does not support images" in resp.json()["error"]


def test_errors_match_ollama(http: httpx.Client) -> None:
    resp = http.post("/api/chat", json={"model": "nope", "messages": HI})
    assert resp.status_code == 404
    assert resp.json() == {"error": "model 'nope' not found"}
    assert http.post("/api/chat", content=b"{nope").status_code == 400
    assert http.post("/api/generate", json={"prompt": "x"}).status_code == 400
    long_input = {"model": EMBED, "input": "word " * 2000}
    truncated = http.post("/api/embed", json=long_input)
    assert truncated.status_code == 200, "Ollama truncates over-long embedding inputs by default"
    assert len(truncated.json()["embeddings"][0]) == 384
    refused = http.post("/api/embed", json={**long_input, "truncate": False})
    assert refused.status_code == 400
    assert "context" in refused.json()["error"]


def _count(http: httpx.Client, **body: object) -> int:
    resp = http.post("/api/tokenize", json=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["model"] == body["model"]
    return int(answer["count"])


def test_tokenize_counts_as_the_model_sees_it(http: httpx.Client) -> None:
    assert 1 <= _count(http, model=CHAT, prompt="hello world") <= 5
    long_text = " ".join(f"word{i % 97} is number {i}." for i in range(500))  # 2000 words
    assert len(long_text.split()) == 2000
    plain = _count(http, model=CHAT, prompt=long_text)
    assert plain > 1000
    messages = [{"role": "user", "content": long_text}]
    templated = _count(http, model=CHAT, messages=messages)
    assert templated > plain, "the chat template adds its own tokens"
    short = [{"role": "user", "content": long_text[:1000]}]
    chat = http.post(
        "/api/chat", json={"model": CHAT, "messages": short, "stream": False, "options": {"num_predict": 1}}
    )
    assert _count(http, model=CHAT, messages=short) == chat.json()["prompt_eval_count"]
    generated = http.post(
        "/api/generate",
        json={"model": CHAT, "prompt": "hello", "system": "Be brief.", "stream": False, "options": {"num_predict": 1}},
    )
    with_system = _count(http, model=CHAT, messages=[{"role": "user", "content": "hello"}], system="Be brief.")
    assert with_system == generated.json()["prompt_eval_count"]
    assert _count(http, model=EMBED, prompt="hello world") >= 3  # BERT's [CLS] and [SEP] around the words


def test_tokenize_reuses_the_loaded_model_as_it_is(http: httpx.Client, client: ollama.Client) -> None:
    http.post("/api/generate", json={"model": CHAT, "keep_alive": -1, "options": {"num_ctx": 2048}})
    _count(http, model=CHAT, prompt="hello")
    running = {m.model: m for m in client.ps().models}
    assert running[CHAT].context_length == 2048, "a count must not reload the model at another context size"
    assert running[CHAT].expires_at.year > 2100, "a count must not change the model's keep_alive"
    http.post("/api/generate", json={"model": CHAT, "keep_alive": "5m"})


def test_tokenize_errors(http: httpx.Client) -> None:
    resp = http.post("/api/tokenize", json={"model": "nope", "prompt": "x"})
    assert resp.status_code == 404
    assert resp.json() == {"error": "model 'nope' not found"}
    bad_bodies: list[object] = [
        {"model": CHAT},
        {"model": CHAT, "prompt": "x", "messages": HI},
        {"model": CHAT, "prompt": 3},
        {"model": CHAT, "messages": "hi"},
        {"model": CHAT, "messages": [{"content": "no role"}]},
        {"model": CHAT, "messages": HI, "system": ["x"]},
        {"prompt": "x"},
        {"model": EMBED, "messages": HI},
        ["not", "an", "object"],
    ]
    for body in bad_bodies:
        resp = http.post("/api/tokenize", json=body)
        assert resp.status_code == 400, body
        assert isinstance(resp.json()["error"], str)
    assert http.post("/api/tokenize", content=b"{nope").status_code == 400


async def test_gateway_client_counts_with_the_engine(engine_url: str, http: httpx.Client) -> None:
    engine = EngineClient(engine_url, Settings())
    await engine.open()
    try:
        body = {"messages": [{"role": "user", "content": "hello"}], "system": "Be brief."}
        assert await engine.count_tokens(CHAT, body) == _count(http, model=CHAT, **body)
        assert engine.has_tokenizer is True
        with pytest.raises(ModelNotFound):
            await engine.count_tokens("nope", {"prompt": "x"})
        assert engine.has_tokenizer is True
    finally:
        await engine.close()


def test_keep_alive_zero_unloads_and_empty_request_loads(http: httpx.Client, client: ollama.Client) -> None:
    loaded = http.post("/api/generate", json={"model": CHAT, "keep_alive": "10m"}).json()
    assert loaded["done_reason"] == "load"
    assert CHAT in {m.model for m in client.ps().models}
    unloaded = http.post("/api/generate", json={"model": CHAT, "keep_alive": 0}).json()
    assert unloaded["done_reason"] == "unload"
    assert CHAT not in {m.model for m in client.ps().models}
    client.chat(model=CHAT, messages=HI, options={"num_predict": 2}, keep_alive=0)
    assert CHAT not in {m.model for m in client.ps().models}
    client.chat(model=CHAT, messages=HI, options={"num_predict": 2}, keep_alive=-1)
    running = {m.model: m for m in client.ps().models}
    assert running[CHAT].expires_at.year > 2100


def _generations(http: httpx.Client) -> int:
    """The llama.cpp calls running in the engine (its ``/api/ps``): they drop only when llama.cpp has returned."""
    return int(http.get("/api/ps").json()["generations"])


def test_abandoned_stream_stops_generation(http: httpx.Client, engine_url: str) -> None:
    """A client that leaves mid-stream stops llama.cpp: proved on the engine's own count of running generations.
    The answer is long on purpose (a schema that needs a thousand numbers), so it cannot end on its own first."""
    poll(lambda: _generations(http) == 0, "an idle engine before the test")
    body = {"model": CHAT, "messages": NUMBERS, "format": LONG, "options": {"num_predict": 1024, "temperature": 0}}
    with httpx.Client(base_url=engine_url, timeout=120) as own, own.stream("POST", "/api/chat", json=body) as resp:
        assert resp.status_code == 200
        first = json.loads(next(resp.iter_lines()))
        assert first["done"] is False, first
        poll(lambda: _generations(http) >= 1, "the engine generating the long answer", limit=60)
    poll(lambda: _generations(http) == 0, "the engine stopping after its client left", limit=5.0)
    running = {m["model"]: m for m in http.get("/api/ps").json()["models"]}
    assert (running[CHAT]["requests"], running[CHAT]["generations"]) == (0, 0), running[CHAT]


def test_concurrent_requests_all_complete(client: ollama.Client) -> None:
    def one(i: int) -> int:
        return client.generate(model=CHAT, prompt=f"Count to {i}.", options={"num_predict": 8}).eval_count

    with ThreadPoolExecutor(max_workers=6) as pool:
        counts = list(pool.map(one, range(6)))
    assert all(0 < c <= 8 for c in counts)


def _own_store(model_store: Path, tmp_path: Path) -> ModelStore:
    """A store of the test's own holding the chat model: copies made in it do not reach other tests."""
    source = ModelStore(model_store)
    text = source.get(CHAT)
    assert text is not None, f"{CHAT} is missing from {model_store}"
    store = ModelStore(tmp_path / "store")
    store.blobs.mkdir(parents=True)
    store.blob_path(text.digest).symlink_to(source.blob_path(text.digest).resolve())
    store.put(text)
    return store


def test_least_recently_used_model_is_evicted(model_store: Path, artifacts_dir: Path, tmp_path: Path) -> None:
    """Room for two models, three asked for: the third evicts the one used longest ago, not the one loaded first."""
    store = _own_store(model_store, tmp_path)
    port = free_port()
    proc = spawn(
        ["engine", "--host", "127.0.0.1", "--port", str(port)],
        env={"SHARED_OLLAMA_MODELS_DIR": str(store.root), "SHARED_OLLAMA_ENGINE_MAX_LOADED_MODELS": "2"},
        log_path=artifacts_dir / "engine-lru.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/api/version", proc)
        engine = ollama.Client(host=url)
        first, second, third = CHAT, "lru-b:latest", "lru-c:latest"
        engine.copy(CHAT, second)
        engine.copy(CHAT, third)

        def use(name: str) -> None:
            assert engine.generate(model=name, prompt="Hi", options={"num_predict": 1}).done

        def loaded() -> set[str]:
            return {str(m.model) for m in engine.ps().models}

        use(first)
        use(second)
        assert loaded() == {first, second}, "both fit: the engine is now full"
        use(first)  # the first model loaded is now the most recently used
        assert loaded() == {first, second}
        use(third)  # one must go to make room
        assert loaded() == {first, third}, "the least recently used model (the second) was evicted"
    finally:
        stop(proc)


def test_switching_models_under_concurrency_hands_no_request_an_evicted_model(
    model_store: Path, artifacts_dir: Path, tmp_path: Path
) -> None:
    """Room for one model, requests for two at once: every request is answered; a model just loaded for one request
    is not evicted by a request for the other before it runs (that left it a closed model: a 500)."""
    store = _own_store(model_store, tmp_path)
    port = free_port()
    proc = spawn(
        ["engine", "--host", "127.0.0.1", "--port", str(port)],
        env={
            "SHARED_OLLAMA_MODELS_DIR": str(store.root),
            "SHARED_OLLAMA_ENGINE_MAX_LOADED_MODELS": "1",
            "SHARED_OLLAMA_ENGINE_NUM_PARALLEL": "2",
        },
        log_path=artifacts_dir / "engine-switching.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/api/version", proc)
        engine = ollama.Client(host=url, timeout=120)
        other = "switch-b:latest"
        engine.create(model=other, from_=CHAT, system="Answer in one word.")
        names = [CHAT, other] * 4

        def one(name: str) -> bool:
            return bool(engine.chat(model=name, messages=HI, options={"num_predict": 2}).done)

        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            answered = list(pool.map(one, names))
        assert answered == [True] * len(names)
        loads = httpx.get(f"{url}/api/ps", timeout=10).json()["loads"]
        assert loads.get(CHAT, 0) >= 1 and loads.get(other, 0) >= 1, loads
    finally:
        stop(proc)
