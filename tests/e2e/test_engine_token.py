"""The managed embedded engine serves its gateway only: a per-start token, in the engine's environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from shared_ollama.engine.store import ModelStore
from tests.e2e.conftest import start_gateway
from tests.support.processes import stop

pytestmark = pytest.mark.e2e
CHAT = "smollm2:135m"
TOKEN_ENV = b"SHARED_OLLAMA_ENGINE_TOKEN="


@pytest.fixture
def private_store(model_store: Path, tmp_path: Path) -> Path:
    """SmolLM2 alone in a store of its own (its blob linked): a copy that got through would not leak."""
    source = ModelStore(model_store)
    text = source.get(CHAT)
    assert text is not None, f"{CHAT} is missing from {model_store}"
    store = ModelStore(tmp_path / "store")
    store.blobs.mkdir(parents=True)
    store.blob_path(text.digest).symlink_to(source.blob_path(text.digest).resolve())
    store.put(text)
    return store.root


@pytest.fixture
def gateway(private_store: Path, tmp_path: Path, artifacts_dir: Path) -> Iterator[httpx.Client]:
    url, proc = start_gateway(private_store, tmp_path / "data", artifacts_dir / "gateway-engine-token.log")
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            yield client
    finally:
        stop(proc)


def _environ(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def _model_ports(pid: int, *known: int) -> list[int]:
    """The loopback ports the engine process listens on besides ``known`` ones (its own, and the gateway's
    listening socket, which it inherits): llama.cpp's, one per loaded model."""
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return [c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port not in known]


def test_the_engine_refuses_everyone_but_its_gateway(gateway: httpx.Client, private_store: Path) -> None:
    chat = gateway.post(
        "/api/chat",
        json={
            "model": CHAT,
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": False,
            "options": {"num_predict": 2},
        },
    )
    assert chat.status_code == 200, chat.text
    engine = gateway.get("/api/v1/health").json()["engine"]
    assert engine["kind"] == "embedded"
    url, pid = engine["url"], int(engine["pid"])

    with httpx.Client(base_url=url, timeout=30) as direct:
        assert direct.get("/api/version").status_code == 401
        assert direct.get("/api/tags").status_code == 401
        assert direct.get("/api/tags", headers={"Authorization": "Bearer guess"}).status_code == 401
        copy = direct.post("/api/copy", json={"source": CHAT, "destination": "stolen:1"})
        assert copy.status_code == 401
        delete = direct.request("DELETE", "/api/delete", json={"model": CHAT})
        assert delete.status_code == 401

        # The token is in the engine's environment (readable by its own user only), never on its command line.
        token = next(v[len(TOKEN_ENV) :] for v in _environ(pid) if v.startswith(TOKEN_ENV)).decode()
        assert len(token) >= 32
        assert token not in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert direct.get("/api/version", headers={"Authorization": f"Bearer {token}"}).status_code == 200

        # llama.cpp's own server for the loaded model (inference, slots) is closed to others too.
        ports = _model_ports(pid, httpx.URL(url).port or 0, gateway.base_url.port or 0)
        assert ports, "the loaded model's llama.cpp port"
        for port in ports:
            model = httpx.post(f"http://127.0.0.1:{port}/completion", json={"prompt": "hi", "n_predict": 1})
            assert model.status_code == 401, port
            assert httpx.get(f"http://127.0.0.1:{port}/slots").status_code == 401, port

    names = {m["name"] for m in gateway.get("/api/tags").json()["models"]}
    assert names == {CHAT}, "nothing was copied and nothing deleted"
    assert [e.name for e in ModelStore(private_store).list()] == [CHAT]

    # /api/ps reports what the load took, measured (engine/footprint.py), and says so.
    ps = gateway.get("/api/ps").json()["models"]
    assert [(m["name"], m["size_estimated"]) for m in ps] == [(CHAT, False)]
    assert ps[0]["size"] > 0
