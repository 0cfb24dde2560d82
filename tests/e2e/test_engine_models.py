"""Model management on the real embedded engine: create, show, copy, delete and pull, as Ollama's clients do it.

The engine runs on a store of its own (SmolLM2's blob linked from the shared store), so creating and deleting
models here leaves the store other tests use as they expect it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from shared_ollama.engine.store import ModelStore
from shared_ollama.protocol.modelfile import parse_modelfile
from tests.e2e.conftest import engine_process

pytestmark = pytest.mark.e2e

BASE = "smollm2:135m"
PIRATE = "pirate:test"
SYSTEM = (
    "You are a pirate captain sailing the seven seas with a loyal crew of buccaneers. Always answer with the word ARRR."
)
"""Longer than SmolLM2's built-in default system prompt, so a chat with it has the larger prompt."""
FEW_SHOT = [
    {"role": "user", "content": "What is your name?"},
    {"role": "assistant", "content": "ARRR!"},
    {"role": "user", "content": "How are you today?"},
    {"role": "assistant", "content": "ARRR!"},
]
QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]
OPTIONS = {"num_predict": 8, "seed": 1}


@pytest.fixture(scope="module")
def models_store(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of its own with SmolLM2 (its blob linked, not copied) and the defaults' install stamps."""
    source = ModelStore(model_store)
    text = source.get(BASE)
    assert text is not None, f"{BASE} is missing from {model_store}"
    store = ModelStore(tmp_path_factory.mktemp("models-store"))
    store.blobs.mkdir(parents=True)
    store.blob_path(text.digest).symlink_to(source.blob_path(text.digest).resolve())
    store.put(text)
    if (source.root / "defaults.json").exists():  # so pulling a default finds it installed, as in the real store
        shutil.copyfile(source.root / "defaults.json", store.root / "defaults.json")
    return store.root


@pytest.fixture(scope="module")
def http(models_store: Path, artifacts_dir: Path) -> Iterator[httpx.Client]:
    with (
        engine_process(models_store, artifacts_dir / "engine-models-e2e.log") as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def pirate(http: httpx.Client) -> str:
    """``pirate:test`` FROM smollm2:135m with SYSTEM and PARAMETER temperature 0, made through Ollama's client."""
    client = ollama.Client(host=str(http.base_url))
    steps = [
        p.status for p in client.create(PIRATE, from_=BASE, system=SYSTEM, parameters={"temperature": 0}, stream=True)
    ]
    assert steps[-1] == "success"
    return PIRATE


def _chat(http: httpx.Client, model: str, messages: list[dict[str, str]], **options: Any) -> dict[str, Any]:
    body = {"model": model, "messages": messages, "stream": False, "options": {**OPTIONS, **options}}
    resp = http.post("/api/chat", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _names(http: httpx.Client) -> set[str]:
    return {m["name"] for m in http.get("/api/tags").json()["models"]}


def test_show_has_the_derived_models_definition(http: httpx.Client, pirate: str, models_store: Path) -> None:
    shown = http.post("/api/show", json={"model": pirate}).json()
    assert shown["system"] == SYSTEM
    assert shown["details"]["parent_model"] == BASE
    assert shown["parameters"] == f"{'temperature':<30} 0"
    modelfile = parse_modelfile(shown["modelfile"])
    assert (modelfile.from_, modelfile.system, modelfile.parameters) == (BASE, SYSTEM, {"temperature": 0.0})
    tags = {m["name"]: m for m in http.get("/api/tags").json()["models"]}
    assert tags[pirate]["digest"] == tags[BASE]["digest"]
    assert len(list((models_store / "blobs").iterdir())) == 1  # the blob is shared, not copied


def test_the_system_prompt_is_in_the_prompt(http: httpx.Client, pirate: str) -> None:
    derived = _chat(http, pirate, QUESTION)
    base = _chat(http, BASE, QUESTION, temperature=0)
    assert derived["prompt_eval_count"] > base["prompt_eval_count"]
    explicit = _chat(http, BASE, [{"role": "system", "content": SYSTEM}, *QUESTION], temperature=0)
    assert derived["prompt_eval_count"] == explicit["prompt_eval_count"]
    assert derived["message"]["content"] == explicit["message"]["content"]  # and temperature 0 came from the model


def test_recreating_a_loaded_model_applies_the_change(http: httpx.Client) -> None:
    """With a few-shot MESSAGE history the tiny model answers as told; before, it does not."""
    create = {"model": "bosun:test", "from": BASE, "system": SYSTEM, "parameters": {"temperature": 0}, "stream": False}
    assert http.post("/api/create", json=create).json() == {"status": "success"}
    before = _chat(http, "bosun:test", QUESTION)
    assert "ARRR" not in before["message"]["content"]
    assert http.post("/api/create", json={**create, "messages": FEW_SHOT}).json() == {"status": "success"}
    after = _chat(http, "bosun:test", QUESTION)
    assert after["prompt_eval_count"] > before["prompt_eval_count"]
    assert "ARRR" in after["message"]["content"]
    assert http.post("/api/show", json={"model": "bosun:test"}).json()["messages"] == FEW_SHOT


def test_copy_then_delete_keeps_the_shared_blob(http: httpx.Client, pirate: str, models_store: Path) -> None:
    copy = http.post("/api/copy", json={"source": pirate, "destination": "pirate-copy:test"})
    assert (copy.status_code, copy.content) == (200, b"")
    assert {pirate, "pirate-copy:test", BASE} <= _names(http)
    assert http.post("/api/show", json={"model": "pirate-copy:test"}).json()["system"] == SYSTEM
    _chat(http, "pirate-copy:test", QUESTION)  # loaded, so the delete must unload it
    assert ollama.Client(host=str(http.base_url)).delete("pirate-copy:test").status == "success"
    missing = {"error": "model 'pirate-copy:test' not found"}
    shown = http.post("/api/show", json={"model": "pirate-copy:test"})
    assert (shown.status_code, shown.json()) == (404, missing)
    chat = http.post("/api/chat", json={"model": "pirate-copy:test", "messages": QUESTION, "stream": False})
    assert (chat.status_code, chat.json()) == (404, missing)
    again = http.request("DELETE", "/api/delete", json={"model": "pirate-copy:test"})
    assert (again.status_code, again.json()) == (404, missing)
    assert "pirate-copy:test" not in {m["name"] for m in http.get("/api/ps").json()["models"]}
    assert len(list((models_store / "blobs").iterdir())) == 1
    assert _chat(http, BASE, QUESTION)["done"] is True
    assert _chat(http, pirate, QUESTION)["done"] is True


def test_pull_of_a_default_streams_success(http: httpx.Client) -> None:
    with http.stream("POST", "/api/pull", json={"model": BASE}) as resp:
        assert resp.status_code == 200
        lines = [json.loads(line) for line in resp.iter_lines() if line.strip()]
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-1] == {"status": "success"}
    assert any(line.get("digest") and line.get("completed") == line.get("total") for line in lines)
    progress = list(ollama.Client(host=str(http.base_url)).pull(BASE, stream=True))
    assert progress[-1].status == "success"
    quiet = http.post("/api/pull", json={"model": BASE, "stream": False})
    assert (quiet.status_code, quiet.json()) == (200, {"status": "success"})
    assert _chat(http, BASE, QUESTION)["done"] is True


def test_pull_of_another_model_asks_its_registry(http: httpx.Client) -> None:
    resp = http.post("/api/pull", json={"model": "localhost/library/llama3:8b", "stream": False})
    assert resp.status_code == 502  # nothing answers on localhost:443 (tests/e2e/test_model_pull_e2e.py pulls)
    assert resp.json()["error"].startswith("cannot reach the registry at https://localhost: ")


def test_create_from_a_blob_the_engine_lacks_is_refused(http: httpx.Client) -> None:
    body = {"model": "imported:test", "files": {"model.gguf": "sha256:" + "0" * 64}, "stream": False}
    resp = http.post("/api/create", json=body)
    assert resp.status_code == 400
    assert "was not found on the server; upload it first (POST /api/blobs/sha256:000" in resp.json()["error"]
    assert "imported:test" not in _names(http)
