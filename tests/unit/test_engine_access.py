"""The embedded engine's token: every request without it is refused when one is configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from shared_ollama.engine.access import RequireToken, presented_token
from shared_ollama.engine.server import create_engine_app
from shared_ollama.engine.store import ModelStore
from shared_ollama.settings import Settings
from tests.unit.test_engine_store import write_gguf

TOKEN = "s3cret-token"


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "store")
    store.add_gguf("base:1b", write_gguf(tmp_path / "a.gguf"), capabilities=["completion"])
    return store


def _client(store: ModelStore, tmp_path: Path, token: str | None) -> TestClient:
    return TestClient(create_engine_app(Settings(data_dir=tmp_path, models_dir=store.root, engine_token=token)))


def test_with_a_token_every_request_needs_it(store: ModelStore, tmp_path: Path) -> None:
    with _client(store, tmp_path, TOKEN) as client:
        for method, path in [("GET", "/"), ("GET", "/api/version"), ("GET", "/api/tags"), ("GET", "/api/ps")]:
            refused = client.request(method, path)
            assert refused.status_code == 401, path
            assert "error" in refused.json()
            assert refused.headers["www-authenticate"] == "Bearer"
        wrong = client.get("/api/tags", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        basic = client.get("/api/tags", headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
        good = client.get("/api/tags", headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200
        assert [m["name"] for m in good.json()["models"]] == ["base:1b"]
        assert client.get("/api/version", headers={"authorization": f"bearer {TOKEN}"}).status_code == 200


def test_admin_operations_without_the_token_change_nothing(store: ModelStore, tmp_path: Path) -> None:
    with _client(store, tmp_path, TOKEN) as client:
        copy = client.post("/api/copy", json={"source": "base:1b", "destination": "stolen:1b"})
        assert copy.status_code == 401
        delete = client.request("DELETE", "/api/delete", json={"model": "base:1b"})
        assert delete.status_code == 401
        create = client.post("/api/create", json={"model": "evil:1b", "from": "base:1b"})
        assert create.status_code == 401
    assert [e.name for e in store.list()] == ["base:1b"]


def test_without_a_token_the_engine_is_open(store: ModelStore, tmp_path: Path) -> None:
    with _client(store, tmp_path, None) as client:
        assert client.get("/api/version").status_code == 200
        assert client.get("/api/tags").status_code == 200


def test_presented_token() -> None:
    assert presented_token([(b"authorization", b"Bearer abc")]) == b"abc"
    assert presented_token([(b"authorization", b"bearer  abc ")]) == b"abc"
    assert presented_token([(b"authorization", b"Basic abc")]) is None
    assert presented_token([(b"x-api-key", b"abc")]) is None


def test_an_empty_token_is_a_mistake() -> None:
    async def app(scope: object, receive: object, send: object) -> None:  # pragma: no cover - never called
        raise AssertionError

    with pytest.raises(ValueError):
        RequireToken(app, "")  # type: ignore[arg-type]
