"""The gateway in process (ASGI) against the scripted fake engine, for faults and edge cases."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
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


class ServedGateway:
    """The gateway app under uvicorn in a thread of its own, on a free loopback port (real connections, so
    client disconnects reach it as they do in production)."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings.model_copy(update={"port": self.port}))
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedGateway:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.01)  # readiness polling of a thread we own, bounded
        assert self.server.started, "gateway did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def serve_gateway(fake_engine: tuple[str, FakeEngine], tmp_path: Path) -> Iterator[Callable[..., ServedGateway]]:
    """Start gateways with setting overrides against the scripted engine; all are stopped after the test."""
    url, _ = fake_engine
    started: list[ServedGateway] = []

    def start(**overrides: object) -> ServedGateway:
        settings = Settings(engine="external", ollama_url=url, data_dir=tmp_path, **overrides)
        served = ServedGateway(settings).__enter__()
        started.append(served)
        return served

    yield start
    for served in started:
        served.__exit__()
