"""Scale-out: two real gateway processes share each tenant's in-flight cap through a real redis-server.

One scripted engine process serves both gateways; requests are held at it with gates (``options.fake_gate``)
so every step decides exactly when they finish. Waiting is readiness polling with bounded deadlines.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import fake_engine_process, free_port, spawn, stop, wait_http_ok

JsonDict = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
TENANT = "shared"
POLL_TIMEOUT = 15.0


def chat(gate: str | None = None) -> JsonDict:
    options: JsonDict = {"num_predict": 2}
    if gate:
        options["fake_gate"] = gate
    return {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": False, "options": options}


def project(name: str) -> dict[str, str]:
    return {"X-Shared-Ollama-Project": name}


def gate_name() -> str:
    return uuid.uuid4().hex


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = POLL_TIMEOUT) -> None:
    """Poll ``check`` until it holds (bounded): readiness polling, not a timed assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for: {what}")
        await asyncio.sleep(0.05)


class EngineProcess:
    """The scripted engine in a process of its own, reachable by every gateway process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: set[str] = set()
        self.used: set[str] = set()

    def gate(self) -> str:
        name = gate_name()
        self.used.add(name)
        return name

    async def open(self, gate: str) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.post(f"{self.url}/_fake/open", json={"gate": gate})
            resp.raise_for_status()
        self.opened.add(gate)

    async def waiting(self, gate: str) -> int:
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.get(f"{self.url}/_fake/requests")
        return int(resp.json()["waiting"].get(gate, 0))

    async def waiting_at_least(self, gate: str, count: int) -> None:
        async def check() -> bool:
            return await self.waiting(gate) >= count

        await until(check, f"{count} requests waiting at gate {gate}")


@pytest.fixture(scope="module")
def engine_process(artifacts_dir: Path) -> Iterator[str]:
    """The scripted engine in a process of its own, shared by the module's gateways."""
    with fake_engine_process(artifacts_dir / "fake-engine-redis.log") as url:
        yield url


@pytest.fixture
async def engine(engine_process: str) -> AsyncIterator[EngineProcess]:
    """The engine; every gate a test used is opened at the end, so nothing stays held."""
    handle = EngineProcess(engine_process)
    yield handle
    for gate in handle.used - handle.opened:
        await handle.open(gate)


class Gateways:
    """Real ``shared-ollama serve`` processes against the scripted engine and one redis-server."""

    def __init__(self, engine_url: str, redis_url: str, data_dir: Path, log_dir: Path) -> None:
        self.engine_url = engine_url
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        data = self.data_dir / name
        data.mkdir(parents=True, exist_ok=True)
        full_env = {
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": self.engine_url,
            "SHARED_OLLAMA_REDIS_URL": self.redis_url,
            "SHARED_OLLAMA_MAX_INFLIGHT_TEXT": "2",
            "SHARED_OLLAMA_DATA_DIR": str(data),
            **env,
        }
        proc = spawn(
            ["serve", "--host", "127.0.0.1", "--port", str(port)],
            env=full_env,
            log_path=self.log_dir / f"gateway-redis-{name}.log",
        )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/api/v1/health", proc, timeout=60)
        return url, proc

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)


@pytest.fixture
def gateways(engine_process: str, redis_url: str, tmp_path: Path, artifacts_dir: Path) -> Iterator[Gateways]:
    started = Gateways(engine_process, redis_url, tmp_path, artifacts_dir)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    async with AsyncExitStack() as stack:

        def make(url: str) -> httpx.AsyncClient:
            client = httpx.AsyncClient(base_url=url, timeout=30)
            stack.push_async_callback(client.aclose)
            return client

        yield make


async def stats(client: httpx.AsyncClient, tenant: str = TENANT) -> JsonDict:
    resp = await client.get("/api/v1/queue/stats", headers=project(tenant))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def in_flight(client: httpx.AsyncClient, tenant: str = TENANT) -> int:
    return int((await stats(client, tenant))["tenants"][tenant]["text"]["in_flight"])


async def test_two_gateways_share_one_tenant_cap(
    gateways: Gateways, engine: EngineProcess, clients: Callable[[str], httpx.AsyncClient]
) -> None:
    url1, _ = gateways.start("one")
    url2, _ = gateways.start("two")
    gw1, gw2 = clients(url1), clients(url2)
    gate = engine.gate()
    held = [
        asyncio.create_task(gw1.post("/api/chat", json=chat(gate), headers=project(TENANT))),
        asyncio.create_task(gw2.post("/api/chat", json=chat(gate), headers=project(TENANT))),
    ]
    await engine.waiting_at_least(gate, 2)

    for client in (gw1, gw2):
        busy = await client.post("/api/chat", json=chat(), headers=project(TENANT))
        assert busy.status_code == 429, busy.text
        assert busy.json()["code"] == "tenant_busy"
        assert f"'{TENANT}'" in busy.json()["error"]
        assert busy.headers["X-Shared-Ollama-Inflight-Remaining"] == "0"
        snapshot = await stats(client)
        assert snapshot["shared_state"] == "redis"
        assert snapshot["tenants"][TENANT]["text"]["in_flight"] == 2, "both replicas' requests count"
        # Each replica's scheduler sees only its own running request; the cap counts both.
        assert snapshot["tenants"][TENANT]["text"]["interactive"]["running"] == 1

    other = await gw2.post("/api/chat", json=chat(), headers=project("other"))
    assert other.status_code == 200, "another tenant is not affected by the shared tenant's cap"
    assert other.headers["X-Shared-Ollama-Inflight-Limit"] == "2"
    assert other.headers["X-Shared-Ollama-Inflight-Remaining"] == "1"

    await engine.open(gate)
    assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
    for client in (gw1, gw2):

        async def released(client: httpx.AsyncClient = client) -> bool:
            return await in_flight(client) == 0

        await until(released, "in_flight back to 0")
        snapshot = await stats(client)
        assert snapshot["queue_depth"] == 0
        assert snapshot["engine_slots"]["in_use"] == 0
        assert await in_flight(client, "other") == 0
    again = await gw1.post("/api/chat", json=chat(), headers=project(TENANT))
    assert again.status_code == 200, "the cap is free again"


async def test_a_crashed_replicas_places_come_back_after_its_lease(
    gateways: Gateways, engine: EngineProcess, clients: Callable[[str], httpx.AsyncClient]
) -> None:
    tenant = f"crash-{uuid.uuid4().hex[:8]}"
    url1, proc1 = gateways.start("doomed", SHARED_OLLAMA_REDIS_LEASE_SECONDS="2")
    url2, _ = gateways.start("survivor")
    gw1, gw2 = clients(url1), clients(url2)
    gate1, gate2 = engine.gate(), engine.gate()
    on_doomed = asyncio.create_task(gw1.post("/api/chat", json=chat(gate1), headers=project(tenant)))
    on_survivor = asyncio.create_task(gw2.post("/api/chat", json=chat(gate2), headers=project(tenant)))
    await engine.waiting_at_least(gate1, 1)
    await engine.waiting_at_least(gate2, 1)
    assert await in_flight(gw2, tenant) == 2
    busy = await gw2.post("/api/chat", json=chat(), headers=project(tenant))
    assert busy.status_code == 429
    assert busy.json()["code"] == "tenant_busy"

    proc1.send_signal(signal.SIGKILL)  # a crashed replica: no release, no shutdown, its leases just stop
    assert proc1.wait(timeout=10) == -signal.SIGKILL
    with pytest.raises(httpx.TransportError):
        await on_doomed

    async def lease_expired() -> bool:
        return await in_flight(gw2, tenant) == 1

    await until(lease_expired, "the crashed replica's place to expire (lease 2 s)")
    back = await gw2.post("/api/chat", json=chat(), headers=project(tenant))
    assert back.status_code == 200, "the crashed replica's place came back"
    assert back.headers["X-Shared-Ollama-Inflight-Remaining"] == "0", "the survivor's held request still counts"
    assert await in_flight(gw2, tenant) == 1

    await engine.open(gate2)
    assert (await on_survivor).status_code == 200

    async def drained() -> bool:
        return await in_flight(gw2, tenant) == 0

    await until(drained, "in_flight back to 0")
    await engine.open(gate1)  # the dead replica's request, still parked at the engine
