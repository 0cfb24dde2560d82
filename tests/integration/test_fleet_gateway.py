"""A fleet of scripted engine hosts behind one gateway (in process): placement by model, the merged model list,
``GET /api/v1/engines``, failover before the first byte, a host taken out and back. The real engines' version of
these is tests/e2e/test_fleet_e2e.py; here the engines are scripted so faults can be injected."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from shared_ollama.app import create_app
from shared_ollama.settings import Settings
from tests.integration.conftest import until as until_async
from tests.support.fake_engine import FakeEngine

HOST = "X-Shared-Ollama-Engine-Host"


class Host:
    """A scripted engine served on a loopback port in a thread of its own (stopped at will). The port is bound
    when the host is made, so no other process can take it between choosing and serving it."""

    def __init__(self) -> None:
        self.engine = FakeEngine()
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        config = uvicorn.Config(self.engine, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)  # readiness of a thread we own, bounded
        assert self._server.started

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()  # refused from now on, as a host that is gone

    def chats(self) -> list[str]:
        """The models of the chat requests this engine received."""
        return [r["body"].get("model") for r in self.engine.received if r["path"] == "/api/chat"]


@contextmanager
def hosts(count: int) -> Iterator[list[Host]]:
    started = [Host() for _ in range(count)]
    for host in started:
        host.start()
    try:
        yield started
    finally:
        for host in started:
            if host._server is not None and not host._server.should_exit:
                host.stop()


@pytest.fixture
def fleet() -> Iterator[list[Host]]:
    with hosts(2) as started:
        yield started


@contextmanager
def engines_file(tmp_path: Path, entries: list[dict[str, Any]]) -> Iterator[Path]:
    import yaml

    path = tmp_path / "engines.yaml"
    path.write_text(yaml.safe_dump({"engines": entries}))
    yield path


@asynccontextmanager
async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client:
            yield client


def _chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}


async def test_requests_go_only_to_hosts_that_serve_their_model(tmp_path: Path, fleet: list[Host]) -> None:
    a, b = fleet
    entries = [
        {"name": "a", "url": a.url, "slots": 2, "models": ["fake", "only-a"]},
        {"name": "b", "url": b.url, "slots": 2, "models": ["fake"]},
    ]
    with engines_file(tmp_path, entries) as path:
        settings = Settings(_env_file=None, engines_file=path, data_dir=tmp_path)
        async with _client(settings) as client:
            for _ in range(4):
                answer = await client.post("/api/chat", json=_chat("only-a"))
                assert answer.status_code == 200, answer.text
                assert answer.headers[HOST] == "a"
            missing = await client.post("/api/chat", json=_chat("nowhere"))
            assert missing.status_code == 404 and missing.json()["code"] == "model_not_found"
            tags = (await client.get("/api/tags")).json()["models"]
            assert [(m["name"], m["hosts"]) for m in tags] == [("fake:latest", ["a", "b"])]
            listed = {e["name"]: e for e in (await client.get("/api/v1/engines")).json()["engines"]}
            assert listed["a"]["state"] == listed["b"]["state"] == "up"
            assert listed["a"]["slots"] == 2 and listed["a"]["slots_in_use"] == 0
    assert a.chats() == ["only-a"] * 4, "the engine that serves the model got every request for it"
    assert b.chats() == []


async def test_a_host_that_fails_before_the_first_byte_is_retried_elsewhere_and_shown_down(
    tmp_path: Path, fleet: list[Host]
) -> None:
    a, b = fleet
    # b first: with both idle, the first listed host is chosen, so the first request goes to the stopped one
    settings = Settings(_env_file=None, engine_urls=f"{b.url},{a.url}", data_dir=tmp_path, engine_health_interval=60)
    async with _client(settings) as client:
        b.stop()  # the monitor does not know yet: its next probe is a minute away
        answers = [await client.post("/api/chat", json=_chat("fake")) for _ in range(6)]
        assert [r.status_code for r in answers] == [200] * 6, [r.text for r in answers]
        assert {r.headers[HOST] for r in answers} == {f"127.0.0.1:{a.port}"}
        streamed = await client.post("/api/chat", json={**_chat("fake"), "stream": True})
        assert streamed.status_code == 200 and streamed.text.strip().splitlines()[-1].find('"done":true') > 0
        listed = {e["name"]: e for e in (await client.get("/api/v1/engines")).json()["engines"]}
        down = listed[f"127.0.0.1:{b.port}"]
        assert down["state"] == "down" and down["failures"] >= 1 and down["last_error"]
        assert listed[f"127.0.0.1:{a.port}"]["state"] == "up"
        health = (await client.get("/api/v1/health")).json()
        assert health["status"] == "healthy" and health["engine"]["hosts_up"] == 1
        metrics = (await client.get("/metrics")).text.splitlines()
        assert f'shared_ollama_engine_host_up{{host="127.0.0.1:{b.port}"}} 0.0' in metrics
        assert f'shared_ollama_engine_host_up{{host="127.0.0.1:{a.port}"}} 1.0' in metrics
        assert f'shared_ollama_engine_host_requests_total{{host="127.0.0.1:{a.port}"}} 7.0' in metrics
        assert f'shared_ollama_engine_host_failures_total{{host="127.0.0.1:{b.port}"}} 1.0' in metrics
    assert len(a.chats()) == 7


async def test_every_host_down_is_a_503_with_retry_after(tmp_path: Path) -> None:
    with hosts(1) as (a,):
        settings = Settings(_env_file=None, engine_urls=a.url, data_dir=tmp_path, engine_health_interval=60)
        async with _client(settings) as client:
            a.stop()
            failed = await client.post("/api/chat", json=_chat("fake"))
            assert failed.status_code == 503, failed.text
            assert failed.headers["Retry-After"]
            again = await client.post("/api/chat", json=_chat("fake"))
            assert again.status_code == 503 and again.json()["code"] == "backend_unavailable"
            health = await client.get("/api/v1/health")
            assert health.status_code == 503 and health.json()["status"] == "degraded"


async def test_one_engine_is_listed_as_the_local_host(gateway: httpx.AsyncClient) -> None:
    assert (await gateway.post("/api/chat", json=_chat("fake"))).status_code == 200
    (local,) = (await gateway.get("/api/v1/engines")).json()["engines"]
    assert local["name"] == "local" and local["state"] == "up" and local["kind"] == "external"
    assert local["slots"] >= 1 and local["slots_in_use"] == 0
    metrics = (await gateway.get("/metrics")).text.splitlines()
    assert 'shared_ollama_engine_host_up{host="local"} 1.0' in metrics


async def test_model_management_reaches_every_host_and_unloading_every_host_that_serves_the_model(
    tmp_path: Path, fleet: list[Host]
) -> None:
    a, b = fleet
    settings = Settings(_env_file=None, engine_urls=f"{a.url},{b.url}", data_dir=tmp_path)
    async with _client(settings) as client:
        pulled = await client.post("/api/pull", json={"model": "fake", "stream": True})
        lines = [line for line in pulled.text.splitlines() if line]
        assert pulled.status_code == 200 and lines.count('{"status":"success"}') == 1, lines
        assert lines[-1] == '{"status":"success"}'
        unloaded = await client.post("/api/generate", json={"model": "fake", "keep_alive": 0})
        assert unloaded.status_code == 200, unloaded.text
        ps = (await client.get("/api/ps")).json()
        assert ps == {"models": []}
    for host in (a, b):
        paths = [(r["path"], r["body"].get("keep_alive")) for r in host.engine.received]
        assert ("/api/pull", None) in paths, "the pull went to every host"
        assert ("/api/generate", 0) in paths, "the unload went to every host that serves the model"


async def test_a_blob_upload_reaches_every_host(tmp_path: Path, fleet: list[Host]) -> None:
    a, b = fleet
    digest = "sha256:" + "ab" * 32
    body = b"x" * 300_000
    settings = Settings(_env_file=None, engine_urls=f"{a.url},{b.url}", data_dir=tmp_path)
    async with _client(settings) as client:
        assert (await client.head(f"/api/blobs/{digest}")).status_code == 404
        sent = await client.post(f"/api/blobs/{digest}", content=body)
        assert sent.status_code == 201, sent.text
    assert a.engine.blobs == [len(body)] and b.engine.blobs == [len(body)], "each host received the whole blob"
    assert not list((tmp_path / "tmp").iterdir()), "the spooled copy is gone"


async def test_a_4xx_is_the_requests_own_and_a_5xx_is_retried_on_another_host(
    tmp_path: Path, fleet: list[Host]
) -> None:
    a, b = fleet
    served = ["fake", "fault-409", "fault-500"]
    entries = [{"name": "a", "url": a.url, "models": served}, {"name": "b", "url": b.url, "models": served}]
    with engines_file(tmp_path, entries) as path:
        settings = Settings(_env_file=None, engines_file=path, data_dir=tmp_path, engine_health_interval=60)
        async with _client(settings) as client:
            conflict = await client.post("/api/chat", json=_chat("fault-409"))
            assert conflict.status_code == 502 and "409" in conflict.json()["error"]
            listed = {e["name"]: e for e in (await client.get("/api/v1/engines")).json()["engines"]}
            assert listed["a"]["state"] == listed["b"]["state"] == "up", "a 4xx takes no host out"
            assert len(a.chats()) + len(b.chats()) == 1, "and is not retried"
            broken = await client.post("/api/chat", json=_chat("fault-500"))
            assert broken.status_code == 502, broken.text
            assert a.chats().count("fault-500") == b.chats().count("fault-500") == 1, "retried once, on the other"
            listed = {e["name"]: e for e in (await client.get("/api/v1/engines")).json()["engines"]}
            assert listed["a"]["state"] == listed["b"]["state"] == "down"


async def test_a_request_may_ask_for_its_engine_host(tmp_path: Path, fleet: list[Host]) -> None:
    a, b = fleet
    entries = [
        {"name": "a", "url": a.url, "models": ["fake", "only-a"]},
        {"name": "b", "url": b.url, "models": ["fake"]},
    ]
    with engines_file(tmp_path, entries) as path:
        settings = Settings(_env_file=None, engines_file=path, data_dir=tmp_path, engine_health_interval=60)
        async with _client(settings) as client:
            pinned = await client.post("/api/chat", json=_chat("fake"), headers={HOST: "b"})
            assert pinned.status_code == 200 and pinned.headers[HOST] == "b", "a is listed first; b was asked for"
            elsewhere = await client.post("/api/chat", json=_chat("only-a"), headers={HOST: "b"})
            assert elsewhere.status_code == 404 and "'b'" in elsewhere.json()["error"]
            unknown = await client.post("/api/chat", json=_chat("fake"), headers={HOST: "nowhere"})
            assert unknown.status_code == 400 and "X-Shared-Ollama-Engine-Host" in unknown.json()["error"]
            b.stop()
            down = await client.post("/api/chat", json=_chat("fake"), headers={HOST: "b"})
            assert down.status_code == 503, "the host asked for is down: no other host answers instead"
    assert b.chats() == ["fake"] and a.chats() == []


async def test_one_engine_answers_to_its_own_name_only(gateway: httpx.AsyncClient) -> None:
    assert (await gateway.post("/api/chat", json=_chat("fake"), headers={HOST: "local"})).status_code == 200
    refused = await gateway.post("/api/chat", json=_chat("fake"), headers={HOST: "gpu-1"})
    assert refused.status_code == 400 and "local" in refused.json()["error"]


async def test_model_management_may_ask_for_one_host(tmp_path: Path, fleet: list[Host]) -> None:
    a, b = fleet
    settings = Settings(_env_file=None, engine_urls=f"{a.url},{b.url}", data_dir=tmp_path)
    only_b = {HOST: f"127.0.0.1:{b.port}"}
    async with _client(settings) as client:
        pulled = await client.post("/api/pull", json={"model": "fake", "stream": False}, headers=only_b)
        assert pulled.status_code == 200, pulled.text
        tags = (await client.get("/api/tags", headers=only_b)).json()["models"]
        assert [m["hosts"] for m in tags] == [[f"127.0.0.1:{b.port}"]], "the model list of the host asked for"
        unknown = await client.post("/api/pull", json={"model": "fake", "stream": False}, headers={HOST: "x"})
        assert unknown.status_code == 400
        everywhere = await client.post("/api/pull", json={"model": "fake", "stream": False})
        assert everywhere.status_code == 200, "the header of an earlier request does not carry over"
    assert [r["path"] for r in a.engine.received] == ["/api/pull"]
    assert [r["path"] for r in b.engine.received] == ["/api/pull", "/api/pull"]


async def test_model_management_takes_a_host_field(tmp_path: Path, fleet: list[Host]) -> None:
    a, b = fleet
    b_name = f"127.0.0.1:{b.port}"
    settings = Settings(_env_file=None, engine_urls=f"{a.url},{b.url}", data_dir=tmp_path)
    async with _client(settings) as client:
        pulled = await client.post("/api/pull", json={"model": "fake", "stream": False, "host": b_name})
        assert pulled.status_code == 200, pulled.text
        copied = await client.post("/api/copy", json={"source": "fake", "destination": "fake-2", "host": b_name})
        assert copied.status_code == 200, copied.text
        deleted = await client.delete(f"/api/v1/models/fake-2?host={b_name}")
        assert deleted.status_code == 200, deleted.text
        for wrong in ("elsewhere", 7, ""):
            refused = await client.post("/api/copy", json={"source": "fake", "destination": "x", "host": wrong})
            assert refused.status_code == 400 and "host" in refused.json()["error"], refused.text
        a_name = f"127.0.0.1:{a.port}"
        conflict = await client.post(
            "/api/copy", json={"source": "fake", "destination": "x", "host": b_name}, headers={HOST: a_name}
        )
        assert conflict.status_code == 400 and "differ" in conflict.json()["error"]
        listed = (await client.get("/api/tags", headers={HOST: b_name})).json()["models"]
        assert [m["hosts"] for m in listed] == [[b_name]]
        everywhere = (await client.get("/api/tags")).json()["models"]
        assert [m["hosts"] for m in everywhere] == [[a_name, b_name]], "a listing asked of b leaves the next whole"
    assert [r["path"] for r in a.engine.received] == [], "nothing reached the host not named"
    assert [r["path"] for r in b.engine.received] == ["/api/pull", "/api/copy", "/api/delete"]


async def test_a_stream_broken_midway_takes_its_host_out_and_requests_no_host_can_take_end_at_once(
    tmp_path: Path, fleet: list[Host]
) -> None:
    a, b = fleet
    entries = [
        {"name": "a", "url": a.url, "slots": 2, "models": ["only-a", "crash-midstream"]},
        {"name": "b", "url": b.url, "models": ["fake"]},
    ]
    gated = {"options": {"fake_gate": "held"}}
    with engines_file(tmp_path, entries) as path:
        settings = Settings(_env_file=None, engines_file=path, data_dir=tmp_path, engine_health_interval=60)
        async with _client(settings) as client, httpx.AsyncClient() as direct:
            held = asyncio.create_task(client.post("/api/chat", json={**_chat("only-a"), **gated}))
            crash = {**_chat("crash-midstream"), "stream": True, "options": {"fake_gate": "crash"}}
            broken = asyncio.create_task(client.post("/api/chat", json=crash))

            async def both_at_a() -> bool:
                return a.engine.waiting.get("held") == 1 and a.engine.waiting.get("crash") == 1

            await until_async(both_at_a, "two requests held at host a")
            queued = asyncio.create_task(client.post("/api/chat", json=_chat("only-a")))

            async def one_queued() -> bool:
                return (await client.get("/api/v1/queue/stats")).json()["queue_depth"] == 1

            await until_async(one_queued, "the third request queued")
            await direct.post(f"{a.url}/_fake/open", json={"gate": "crash"})
            cut = await broken
            assert cut.status_code == 200 and '"error"' in cut.text.strip().splitlines()[-1], "one error frame"
            refused = await queued
            assert refused.status_code == 503 and refused.json()["code"] == "backend_unavailable", refused.text
            listed = {e["name"]: e for e in (await client.get("/api/v1/engines")).json()["engines"]}
            assert listed["a"]["state"] == "down" and listed["a"]["failures"] == 1
            assert listed["b"]["state"] == "up"
            await direct.post(f"{a.url}/_fake/open", json={"gate": "held"})
            assert (await held).status_code == 200, "the request already running on the host finishes"
    assert a.chats().count("only-a") == 1, "the queued request never reached the host"


async def test_metrics_analytics_and_usage_count_each_request_under_the_host_that_answered(
    tmp_path: Path, fleet: list[Host]
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    a, b = fleet
    entries = [{"name": "a", "url": a.url, "models": ["fake"]}, {"name": "b", "url": b.url, "models": ["fake"]}]
    with engines_file(tmp_path, entries) as path:
        settings = Settings(_env_file=None, engines_file=path, data_dir=tmp_path, engine_health_interval=60)
        async with _client(settings) as client:
            for name, count in (("a", 3), ("b", 2)):
                for _ in range(count):
                    answer = await client.post(
                        "/api/chat", json={**_chat("fake"), "stream": True}, headers={HOST: name}
                    )
                    assert answer.status_code == 200 and answer.headers[HOST] == name, answer.text
            refused = await client.post("/api/chat", json=_chat("nowhere"))  # served by no host: reached none
            assert refused.status_code == 404, refused.text
            exposition = (await client.get("/metrics")).text
            window = {"window": "1h", "group_by": "host"}
            analytics = (await client.get("/api/v1/analytics", params=window)).json()
            usage = (await client.get("/api/v1/usage", params=window)).json()
    samples = [s for family in text_string_to_metric_families(exposition) for s in family.samples]

    def total(name: str, **labels: str) -> float:
        return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())

    for name, count in (("a", 3), ("b", 2)):
        assert total("shared_ollama_requests_total", host=name, code="ok") == count, name
        assert total("shared_ollama_time_to_first_token_seconds_count", host=name, model="fake") == count, name
        assert total("shared_ollama_generation_tokens_per_second_count", host=name, model="fake") == count, name
        assert total("shared_ollama_tokens_total", host=name, kind="generated") > 0, name
    assert total("shared_ollama_requests_total", host="-", code="model_not_found") == 1
    assert total("shared_ollama_requests_total") == 6, "each request under one host label"
    assert {g["key"]: g["requests"] for g in analytics["groups"]} == {"a": 3, "b": 2, "": 1}, analytics
    assert {r["host"]: r["requests"] for r in usage["rows"]} == {"a": 3, "b": 2}, usage
    assert analytics["recent_errors"][0]["host"] == "" and analytics["recent_errors"][0]["code"] == "model_not_found"


async def test_a_flooding_tenant_gets_its_share_across_two_hosts(tmp_path: Path, fleet: list[Host]) -> None:
    a, b = fleet
    entries = [
        {"name": "a", "url": a.url, "slots": 1, "models": ["fake"]},
        {"name": "b", "url": b.url, "slots": 1, "models": ["fake", "hold-b"]},
    ]
    flood_headers, polite_headers = {"X-Shared-Ollama-Project": "flood"}, {"X-Shared-Ollama-Project": "polite"}

    def tagged(tag: int, model: str = "fake", **options: Any) -> dict[str, Any]:
        return {**_chat(model), "options": {"seed": tag, **options}}

    with engines_file(tmp_path, entries) as path:
        settings = Settings(
            _env_file=None, engines_file=path, data_dir=tmp_path, engine_health_interval=60, max_inflight_text=60
        )
        async with _client(settings) as client, httpx.AsyncClient() as direct:
            held = [  # one request holds each host (b through a model only b serves: a is warm for "fake")
                asyncio.create_task(
                    client.post("/api/chat", json=tagged(-1, model, fake_gate="go"), headers=flood_headers)
                )
                for model in ("fake", "hold-b")
            ]

            async def both_held() -> bool:
                return a.engine.waiting.get("go") == 1 and b.engine.waiting.get("go") == 1

            await until_async(both_held, "one request held at each host")

            async def queued(count: int) -> bool:
                return (await client.get("/api/v1/queue/stats")).json()["queue_depth"] == count

            flood = [
                asyncio.create_task(client.post("/api/chat", json=tagged(i), headers=flood_headers)) for i in range(40)
            ]
            await until_async(lambda: queued(40), "the flood queued")
            polite = [
                asyncio.create_task(client.post("/api/chat", json=tagged(1000 + i), headers=polite_headers))
                for i in range(4)
            ]
            await until_async(lambda: queued(44), "everyone queued")
            for host in (a, b):
                await direct.post(f"{host.url}/_fake/open", json={"gate": "go"})
            answers = await asyncio.gather(*held, *flood, *polite)
            assert [r.status_code for r in answers] == [200] * 46
    started = sorted((r for h in (a, b) for r in h.engine.received if r["path"] == "/api/chat"), key=lambda r: r["at"])
    order = [r["body"]["options"]["seed"] for r in started if r["body"]["options"]["seed"] >= 0]
    last_polite = max(i for i, seed in enumerate(order) if seed >= 1000)
    assert last_polite < 12, f"the polite tenant's 4 requests alternate with the flood on both hosts: {order[:14]}"
    assert sum(1 for seed in order[last_polite + 1 :] if seed < 1000) >= 30, "the flood was still draining"
    assert len(a.chats()) > 5 and len(b.chats()) > 5, "both hosts took their share of the work"
