"""The gateway in process (ASGI) against the scripted fake engine, for faults and edge cases.

Also the helpers the tests share for talking to a served gateway: request bodies, tenant headers, gate names,
HTTP clients and the queue stats (with the check that every counter drained back to zero).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from shared_ollama.app import create_app
from shared_ollama.http_server import server_config
from shared_ollama.settings import Settings
from tests.support.fake_engine import FakeEngine
from tests.support.observability import Gateways
from tests.support.processes import fake_engine_process, free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs against the scripted engine: marked ``integration`` (``-m integration`` also selects
    the scripted-engine tests that live in tests/e2e/ for their process fixtures)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


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

    def __init__(self, settings: Settings, *, as_serve: bool = False) -> None:
        """``as_serve``: with the server configuration ``shared-ollama serve`` uses (its read timeouts included)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = settings.model_copy(update={"port": self.port})
        self.app = create_app(settings)
        if as_serve:
            config = server_config(settings, self.app, host="127.0.0.1", port=self.port)
        else:
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


@pytest.fixture
def served(fake_engine: tuple[str, FakeEngine], tmp_path: Path) -> Iterator[int]:
    """The port of a gateway served as ``serve`` serves it, with 0.5 s header and body timeouts, 1 s keep-alive."""
    settings = Settings(
        engine="external",
        ollama_url=fake_engine[0],
        data_dir=tmp_path,
        header_timeout=0.5,
        body_timeout=0.5,
        keep_alive_timeout=1,
        log_level="warning",
    )
    with ServedGateway(settings, as_serve=True) as gateway:
        yield gateway.port


class Engine:
    def __init__(self, url: str, engine: FakeEngine) -> None:
        self.url = url
        self.engine = engine

    async def open(self, gate: str) -> None:
        async with httpx.AsyncClient() as client:
            await client.post(f"{self.url}/_fake/open", json={"gate": gate})

    def waiting(self, gate: str) -> int:
        return self.engine.waiting.get(gate, 0)

    async def waiting_at_least(self, gate: str, count: int) -> None:
        async def check() -> bool:
            return self.waiting(gate) >= count

        await until(check, f"{count} requests at gate {gate}")


@pytest.fixture
def engine(fake_engine: tuple[str, FakeEngine]) -> Engine:
    """The scripted engine, with its gates (see tests/support/fake_engine.py)."""
    return Engine(*fake_engine)


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 10.0) -> None:
    """Poll ``check`` until it holds (bounded): readiness polling, not a timed assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.01)


JsonDict = dict[str, Any]


def chat(gate: str | None = None, *, model: str = "fake", stream: bool = False, **options: Any) -> JsonDict:
    opts: JsonDict = dict(options)
    if gate:
        opts["fake_gate"] = gate
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream, "options": opts}


def project(name: str) -> dict[str, str]:
    return {"X-Shared-Ollama-Project": name}


@pytest.fixture
def http_client_options() -> dict[str, Any]:
    """How ``http`` makes its clients; a module overrides this fixture for another timeout or pool size."""
    return {"timeout": 30, "limits": httpx.Limits(max_connections=400)}


@pytest.fixture
async def http(http_client_options: dict[str, Any]) -> AsyncIterator[Callable[[ServedGateway], httpx.AsyncClient]]:
    """Clients for served gateways, all closed after the test."""
    clients: list[httpx.AsyncClient] = []

    def make(gw: ServedGateway) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=gw.url, **http_client_options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def gate_name() -> str:
    return uuid.uuid4().hex


async def stats(client: httpx.AsyncClient) -> JsonDict:
    resp = await client.get("/api/v1/queue/stats")
    assert resp.status_code == 200
    return dict(resp.json())


async def assert_drained(client: httpx.AsyncClient) -> None:
    """Every counter back to exactly zero."""

    async def drained() -> bool:
        s = await stats(client)
        return s["queue_depth"] == 0 and s["engine_slots"]["in_use"] == 0

    await until(drained, "queue and slots drained")
    s = await stats(client)
    for name, kinds in s["tenants"].items():
        for kind, row in kinds.items():
            assert row["in_flight"] == 0, (name, kind, row)
            for priority in ("interactive", "batch"):
                assert row[priority] == {"queued": 0, "running": 0}, (name, kind, row)


@pytest.fixture(scope="module")
def process_engine(artifacts_dir: Path) -> Iterator[str]:
    """The scripted engine in a process of its own, shared by a module's ``gateways`` (gateway processes)."""
    with fake_engine_process(artifacts_dir / "fake-engine-processes.log") as url:
        yield url


@pytest.fixture
def gateways(process_engine: str, artifacts_dir: Path) -> Iterator[Gateways]:
    """Gateway processes (``shared-ollama serve``) against ``process_engine``; all are stopped after the test."""
    started = Gateways(process_engine, artifacts_dir)
    try:
        yield started
    finally:
        started.stop_all()
