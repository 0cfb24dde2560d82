"""Blob uploads through the gateway (``HEAD`` / ``POST /api/blobs/sha256:<hex>``) against the scripted engine: the
body streamed through, the size limit (declared and counted), a bad digest, who may upload, and the time a long
upload may take (per chunk, not for the whole body) under the configuration ``shared-ollama serve`` runs.

What the real engine does with the bytes (digest check, nothing kept on failure) is
tests/e2e/test_model_files_e2e.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml

from shared_ollama.engine.server import create_engine_app
from shared_ollama.settings import Settings
from tests.integration.conftest import ServedGateway, until
from tests.support.fake_engine import FakeEngine
from tests.support.processes import free_port

pytestmark = pytest.mark.timeout(60)
DIGEST = "sha256:" + "ab" * 32
LIMIT = 1_000_000
KEYS = {"ops": "key-ops", "maker": "key-maker", "web": "key-web"}


def _auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


async def _body(size: int, chunk: int = 65536, pause: float = 0.0) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        part = min(chunk, size - sent)
        sent += part
        yield b"z" * part
        if pause:
            await asyncio.sleep(pause)  # a slow client's pace (the behaviour under test), not synchronisation


@pytest.fixture
def gateway(serve_gateway: Callable[..., ServedGateway], tmp_path: Path) -> ServedGateway:
    tenants = {
        "tenants": [
            {"name": "ops", "role": "admin", "keys": [KEYS["ops"]]},
            {"name": "maker", "keys": [KEYS["maker"]], "policy": {"manage_models": True}},
            {"name": "web", "keys": [KEYS["web"]]},
        ]
    }
    (tmp_path / "tenants.yaml").write_text(yaml.safe_dump(tenants))
    return serve_gateway(tenants_file=tmp_path / "tenants.yaml", max_blob_bytes=LIMIT)


async def test_an_upload_is_streamed_to_the_engine(gateway: ServedGateway, fake_engine: tuple[str, FakeEngine]) -> None:
    engine = fake_engine[1]
    before = len(engine.blobs)
    async with httpx.AsyncClient(base_url=gateway.url, headers=_auth("maker"), timeout=30) as client:
        assert (await client.head(f"/api/blobs/{DIGEST}")).status_code == 404
        sent = await client.post(f"/api/blobs/{DIGEST}", content=_body(LIMIT))
        assert sent.status_code == 201, sent.text
    assert engine.blobs[before:] == [LIMIT], "the engine received the whole body"


@pytest.mark.parametrize("tenant", ["web"])
async def test_a_tenant_that_may_not_manage_models_may_not_upload(
    gateway: ServedGateway, fake_engine: tuple[str, FakeEngine], tenant: str
) -> None:
    before = len(fake_engine[1].blobs)
    async with httpx.AsyncClient(base_url=gateway.url, headers=_auth(tenant), timeout=30) as client:
        head = await client.head(f"/api/blobs/{DIGEST}")
        post = await client.post(f"/api/blobs/{DIGEST}", content=b"weights")
    assert (head.status_code, post.status_code) == (403, 403)
    assert "manage_models" in post.json()["error"]
    assert len(fake_engine[1].blobs) == before


async def test_sizes_over_the_limit_and_bad_digests_are_refused(
    gateway: ServedGateway, fake_engine: tuple[str, FakeEngine]
) -> None:
    engine = fake_engine[1]
    before, cut = len(engine.blobs), engine.blobs_cut
    async with httpx.AsyncClient(base_url=gateway.url, headers=_auth("ops"), timeout=30) as client:
        declared = await client.post(f"/api/blobs/{DIGEST}", content=b"z" * (LIMIT + 1))
        assert (declared.status_code, declared.json()["code"]) == (413, "request_too_large")
        assert f"the limit is {LIMIT} bytes" in declared.json()["error"]
        counted = await client.post(f"/api/blobs/{DIGEST}", content=_body(LIMIT + 1))
        assert (counted.status_code, counted.json()["code"]) == (413, "request_too_large")
        bad = await client.post("/api/blobs/sha256:1234", content=b"z")
        assert (bad.status_code, bad.json()["code"]) == (400, "invalid_request")
        assert "expected sha256:<64 hex digits>" in bad.json()["error"]

    async def engine_saw_the_cut() -> bool:
        return engine.blobs_cut > cut

    await until(engine_saw_the_cut, "the engine's upload cut off")
    assert len(engine.blobs) == before, "no upload over the limit reached its end at the engine"


async def test_an_upload_may_take_longer_than_the_body_timeout_while_bytes_keep_coming(
    served: int, fake_engine: tuple[str, FakeEngine]
) -> None:
    engine = fake_engine[1]
    before = len(engine.blobs)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served}", timeout=30) as client:
        slow = await client.post(f"/api/blobs/{DIGEST}", content=_body(12 * 1000, chunk=1000, pause=0.2))
    assert slow.status_code == 201, "2.4 s of upload, a chunk every 0.2 s: never 0.5 s without a byte"
    assert engine.blobs[before:] == [12_000]


async def test_an_upload_that_stops_sending_gets_408(served: int, fake_engine: tuple[str, FakeEngine]) -> None:
    engine = fake_engine[1]
    cut = engine.blobs_cut
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    head = f"POST /api/blobs/{DIGEST} HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n"
    writer.write(head.encode() + b"5\r\nhello\r\n")  # and then nothing more
    await writer.drain()
    answer = await reader.read()  # returns once the gateway has answered and closed the connection
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"code":"body_timeout"' in answer

    async def engine_saw_the_cut() -> bool:
        return engine.blobs_cut > cut

    await until(engine_saw_the_cut, "the engine's upload cut off")


@pytest.fixture
def engine_app_url(tmp_path: Path) -> Iterator[str]:
    """The embedded engine's HTTP app (no model is loaded by blob requests) under uvicorn in a thread, with a
    disk that can never keep ``min_free_disk_bytes`` free."""
    port = free_port()
    settings = Settings(_env_file=None, models_dir=tmp_path / "store", min_free_disk_bytes=1 << 60)
    server = uvicorn.Server(
        uvicorn.Config(create_engine_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)  # readiness polling of a thread we own, bounded
    assert server.started, "engine app did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)


async def test_the_declared_size_reaches_the_engine_which_refuses_what_its_disk_cannot_hold(
    engine_app_url: str, tmp_path: Path
) -> None:
    settings = Settings(engine="external", ollama_url=engine_app_url, data_dir=tmp_path / "gw")
    with ServedGateway(settings) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            full = await client.post(f"/api/blobs/{DIGEST}", content=b"z" * 1000)
    assert (full.status_code, full.json()["code"]) == (507, "insufficient_storage")
    assert "min_free_disk_bytes" in full.json()["error"]
    assert [p.name for p in (tmp_path / "store" / "blobs").iterdir()] == [], "nothing written"
