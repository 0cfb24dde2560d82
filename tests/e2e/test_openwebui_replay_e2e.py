"""Open WebUI's request sequence against the real engine, as its Ollama router sends it (read from
``open_webui/routers/ollama.py``, version 0.12.4; docs/INTEGRATION_GUIDE.md): the model list, details, a streamed
and a background chat, embeddings, a pull with progress, a GGUF upload and create from the blob, copy, delete, and
the unload. Headers as Open WebUI sends them (its key as Bearer, the forwarded user headers)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from shared_ollama.engine.store import ModelStore
from tests.e2e.conftest import start_gateway
from tests.support.processes import poll, stop

pytestmark = pytest.mark.e2e

CHAT_MODEL = "smollm2:135m"
EMBED_MODEL = "all-minilm"
TASK_CAP = 16
KEY = "key-webui"
HEADERS = {
    "Authorization": f"Bearer {KEY}",
    "X-OpenWebUI-User-Name": "Ada",
    "X-OpenWebUI-User-Id": "user-1",
    "X-OpenWebUI-User-Email": "ada@example.com",
    "X-OpenWebUI-User-Role": "admin",
}
JsonDict = dict[str, Any]


@pytest.fixture(scope="module")
def webui(model_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A gateway with its own engine; Open WebUI's tenant is a user allowed to manage models (not an admin: the
    engine-level policy applies to it)."""
    data = tmp_path_factory.mktemp("gw-openwebui")
    tenants = data / "tenants.yaml"
    tenants.write_text(
        yaml.safe_dump(
            {
                "tenants": [
                    {"name": "ops", "role": "admin", "keys": ["key-ops"]},
                    {"name": "webui", "keys": [KEY], "policy": {"openwebui_users": True, "manage_models": True}},
                ]
            }
        )
    )
    url, proc = start_gateway(
        model_store,
        data,
        artifacts_dir / "gateway-openwebui-e2e.log",
        env={
            "SHARED_OLLAMA_TENANTS_FILE": str(tenants),
            "SHARED_OLLAMA_DEFAULT_MAX_OUTPUT_TOKENS": str(TASK_CAP),
        },
    )
    try:
        with httpx.Client(base_url=url, headers=HEADERS, timeout=180) as client:
            yield client
    finally:
        stop(proc)


def ndjson(resp: httpx.Response) -> list[JsonDict]:
    return [orjson.loads(line) for line in resp.text.splitlines() if line.strip()]


def test_model_list_details_and_version(webui: httpx.Client) -> None:
    assert webui.get("/api/version").json()["version"]
    names = [m["name"] for m in webui.get("/api/tags").json()["models"]]
    assert CHAT_MODEL in names and f"{EMBED_MODEL}:latest" in names
    assert webui.get("/api/ps").status_code == 200
    shown = webui.post("/api/show", json={"model": CHAT_MODEL}).json()
    assert shown["details"]["family"] == "llama"


def test_streamed_chat_with_its_parameters_and_a_background_task(webui: httpx.Client) -> None:
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "Hello!"}],
        "stream": True,
        "options": {"temperature": 0.8, "num_ctx": 8192, "num_batch": 512, "num_predict": 8},
    }
    with webui.stream("POST", "/api/chat", json=body) as resp:
        assert resp.status_code == 200
        assert "num_ctx=8192" in resp.headers["X-Shared-Ollama-Policy"], "the load-time option was held back"
        lines = [orjson.loads(line) for line in resp.iter_lines() if line.strip()]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] <= 8
    assert "".join(line["message"]["content"] for line in lines)
    task = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "Generate a concise title for this chat: Hello!"}],
        "stream": False,
    }
    answer = webui.post("/api/chat", json=task)
    assert answer.status_code == 200, answer.text
    assert answer.json()["eval_count"] <= TASK_CAP, "a background task without num_predict stops at the default"


def test_embeddings(webui: httpx.Client) -> None:
    answer = webui.post("/api/embed", json={"model": f"{EMBED_MODEL}:latest", "input": ["hello", "world"]}).json()
    assert [len(v) for v in answer["embeddings"]] == [384, 384]


def test_pull_with_progress(webui: httpx.Client) -> None:
    resp = webui.post("/api/pull", json={"model": EMBED_MODEL})
    assert resp.status_code == 200
    lines = ndjson(resp)
    assert lines[0]["status"] == "pulling manifest"
    assert lines[-1] == {"status": "success"}


def test_gguf_upload_create_copy_delete(webui: httpx.Client, model_store: Path) -> None:
    entry = ModelStore(model_store).get(CHAT_MODEL)
    assert entry is not None
    blob = ModelStore(model_store).blob_path(entry.digest).read_bytes()
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    uploaded = webui.post(
        f"/api/blobs/{digest}",
        content=blob,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(blob))},
    )
    assert uploaded.status_code in (200, 201), uploaded.text
    created = webui.post("/api/create", json={"model": "uploaded", "files": {"uploaded.gguf": digest}, "stream": False})
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "success"
    chat = {"model": "uploaded", "messages": [{"role": "user", "content": "Hi"}], "stream": False}
    answered = webui.post("/api/chat", json={**chat, "options": {"num_predict": 2}})
    assert answered.status_code == 200 and answered.json()["eval_count"] >= 1, answered.text
    copied = webui.post("/api/copy", json={"source": "uploaded:latest", "destination": "uploaded-copy"})
    assert copied.status_code == 200, copied.text
    for name in ("uploaded-copy:latest", "uploaded:latest"):
        assert webui.request("DELETE", "/api/delete", json={"name": name}).status_code == 200
    names = [m["name"] for m in webui.get("/api/tags").json()["models"]]
    assert "uploaded:latest" not in names and "uploaded-copy:latest" not in names


def test_unload(webui: httpx.Client) -> None:
    hi = [{"role": "user", "content": "Hi"}]
    webui.post("/api/chat", json={"model": CHAT_MODEL, "messages": hi, "stream": False, "options": {"num_predict": 1}})
    unload = webui.post("/api/generate", json={"model": CHAT_MODEL, "keep_alive": 0, "prompt": ""})
    assert unload.status_code == 200, unload.text

    def unloaded() -> bool:
        return CHAT_MODEL not in [m["name"] for m in webui.get("/api/ps").json()["models"]]

    poll(unloaded, "the unloaded model to leave the engine")
