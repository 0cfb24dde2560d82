"""The gateway in process (ASGI) against the scripted fake engine, for faults and edge cases."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from shared_ollama.app import create_app
from shared_ollama.settings import Settings
from tests.support.fake_engine import FakeEngine
from tests.support.processes import free_port


@pytest.fixture(scope="session")
def fake_engine() -> Iterator[tuple[str, FakeEngine]]:
    engine = FakeEngine()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(engine, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)  # readiness polling of a thread we own, bounded
    assert server.started, "fake engine did not start"
    yield f"http://127.0.0.1:{port}", engine
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
async def gateway(fake_engine: tuple[str, FakeEngine], tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    url, _ = fake_engine
    settings = Settings(engine="external", ollama_url=url, data_dir=tmp_path)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client
