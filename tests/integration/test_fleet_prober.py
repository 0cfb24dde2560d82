"""Probing the fleet's hosts over real loopback HTTP: the scripted engine as an ``ollama`` host, a stand-in
OpenAI-compatible server (``/v1/models``) and a stand-in Ollama API with loaded models, and a port nobody listens
on. The monitor's breakers run on a fake clock; the probes are real requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from shared_ollama.service.fleet import prober
from shared_ollama.service.fleet.config import Host, parse_fleet_config
from shared_ollama.service.fleet.health import BreakerPolicy
from shared_ollama.service.fleet.prober import FleetMonitor, probe_host
from tests.support.fake_engine import FakeEngine
from tests.support.processes import free_port

SECRET = "sk-fleet-test-secret"


@dataclass
class StandIn:
    """A tiny upstream: ``/v1/models`` (under any path prefix) and the Ollama probe routes, scripted per test."""

    models: list[str] = field(default_factory=lambda: ["Qwen/Qwen3-8B", "smollm2:135m"])
    loaded: list[str] = field(default_factory=list)
    status: int = 200
    body: bytes | None = None
    hang: bool = False
    chunked: bool = False
    required_key: str | None = None
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path, request.headers.get("Authorization")))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let concurrent probes overlap if the monitor sends them at once
            if self.hang:
                await asyncio.Event().wait()  # never answers: the probe's own bound ends it
            if self.required_key and request.headers.get("Authorization") != f"Bearer {self.required_key}":
                return web.json_response({"error": "bad key"}, status=401)
            if self.chunked and self.body is not None:  # no Content-Length: the reader counts as it goes
                response = web.StreamResponse(status=self.status)
                await response.prepare(request)
                for start in range(0, len(self.body), 100):
                    await response.write(self.body[start : start + 100])
                await response.write_eof()
                return response
            if self.status != 200 or self.body is not None:
                return web.Response(status=self.status, body=self.body or b'{"error": "scripted"}')
            path = request.path
            if path.endswith("/v1/models"):
                return web.json_response(
                    {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
                )
            if path.endswith("/api/version"):
                return web.json_response({"version": "0.0.0-stand-in"})
            if path.endswith("/api/ps"):
                return web.json_response({"models": [{"name": m, "model": m} for m in self.loaded]})
            if path.endswith("/api/tags"):
                return web.json_response({"models": [{"name": m, "model": m} for m in self.models]})
            return web.json_response({"error": "no such route"}, status=404)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    upstream = StandIn()
    app = web.Application()
    app.router.add_get("/{tail:.*}", upstream.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    upstream.url = f"http://127.0.0.1:{port}"
    yield upstream
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def hosts(*entries: dict[str, Any]) -> tuple[Host, ...]:
    return parse_fleet_config({"engines": list(entries)}, default_slots=2)


async def eventually(check: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Wait (bounded) for the monitor's own task to get somewhere."""
    for _ in range(int(limit / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)  # polling interval, not synchronisation between test steps
    raise AssertionError(f"timed out waiting for: {what}")


async def test_the_scripted_engine_as_an_ollama_host(
    fake_engine: tuple[str, FakeEngine], session: aiohttp.ClientSession
) -> None:
    (host,) = hosts({"url": fake_engine[0], "name": "local"})
    status = await probe_host(session, host)
    assert status.ok and status.error is None
    assert status.installed == frozenset({"fake:latest"})
    assert status.loaded == frozenset()
    monitor = FleetMonitor([host], session)
    await monitor.refresh_all()
    assert monitor.hosts_for("fake") == [host]
    assert monitor.hosts_for("fake:latest") == [host]
    assert monitor.hosts_for("other") == []
    assert monitor.warm_hosts("fake") == []
    (snap,) = monitor.snapshot()
    assert (snap["name"], snap["kind"], snap["state"], snap["installed_count"], snap["loaded"]) == (
        "local",
        "ollama",
        "up",
        1,
        [],
    )


async def test_an_openai_host_lists_its_models_and_gets_the_key_as_bearer(
    stand_in: StandIn, session: aiohttp.ClientSession
) -> None:
    stand_in.required_key = SECRET
    (host,) = hosts({"url": stand_in.url, "kind": "openai", "api_key": SECRET, "name": "vllm"})
    monitor = FleetMonitor([host], session)
    await monitor.refresh_all()
    assert stand_in.seen == [("/v1/models", f"Bearer {SECRET}")]
    assert monitor.hosts_for("Qwen/Qwen3-8B") == [host]
    assert monitor.warm_hosts("Qwen/Qwen3-8B") == [host]  # an OpenAI-compatible server serves what it lists
    assert monitor.hosts_for("smollm2:135m") == [host]
    assert monitor.upstream_name("vllm", "Qwen/Qwen3-8B:latest") == "Qwen/Qwen3-8B"
    assert monitor.hosts_for("llama3") == []
    snapshot = monitor.snapshot(in_use={"vllm": 1})
    assert SECRET not in json.dumps(snapshot)
    assert snapshot[0]["slots"] == 2 and snapshot[0]["slots_in_use"] == 1
    assert snapshot[0]["state"] == "up"


async def test_a_wrong_key_is_a_failed_probe_that_never_shows_the_key(
    stand_in: StandIn, session: aiohttp.ClientSession
) -> None:
    stand_in.required_key = "the-right-key"
    (host,) = hosts({"url": stand_in.url, "kind": "openai", "api_key": SECRET})
    monitor = FleetMonitor([host], session)
    await monitor.refresh_all()
    (snap,) = monitor.snapshot()
    assert snap["state"] == "down"
    assert "HTTP 401" in snap["last_error"] and "api_key" in snap["last_error"]
    assert SECRET not in json.dumps(snap)


async def test_an_ollama_host_reports_loaded_and_installed_models_by_canonical_name(
    stand_in: StandIn, session: aiohttp.ClientSession
) -> None:
    stand_in.models = ["all-minilm:latest", "smollm2:135m"]
    stand_in.loaded = ["smollm2:135m"]
    warm, restricted = hosts(
        {"url": stand_in.url + "/warm", "name": "warm"},
        {"url": stand_in.url + "/restricted", "name": "restricted", "models": ["all-minilm"]},
    )
    monitor = FleetMonitor([warm, restricted], session)
    await monitor.refresh_all()
    assert {path for path, _ in stand_in.seen} == {
        f"/{prefix}/api/{route}" for prefix in ("warm", "restricted") for route in ("version", "ps", "tags")
    }
    assert all(auth is None for _, auth in stand_in.seen)
    assert monitor.hosts_for("all-minilm") == [warm, restricted]
    assert monitor.hosts_for("smollm2:135m") == [warm]  # the configured models restrict what a host serves
    assert monitor.warm_hosts("smollm2:135m") == [warm]
    assert monitor.warm_hosts("all-minilm") == []


async def test_a_host_never_probed_serves_only_its_configured_models(session: aiohttp.ClientSession) -> None:
    listed, configured = hosts({"url": "http://127.0.0.1:9"}, {"url": "http://127.0.0.1:10", "models": ["m"]})
    monitor = FleetMonitor([listed, configured], session)
    assert monitor.hosts_for("m") == [configured]


async def test_a_dead_port_takes_the_host_out_and_its_url_stays_masked(session: aiohttp.ClientSession) -> None:
    port = free_port()  # nothing listens here
    (host,) = hosts({"url": f"http://user:pw-secret@127.0.0.1:{port}", "models": ["m"]})
    monitor = FleetMonitor([host], session)
    assert monitor.hosts_for("m") == [host]
    status = await monitor.refresh(host.name)
    assert status is not None and not status.ok
    assert status.error is not None and "cannot connect" in status.error
    assert monitor.hosts_for("m") == []
    (snap,) = monitor.snapshot()
    assert snap["state"] == "down"
    assert snap["url"] == f"http://user:***@127.0.0.1:{port}"
    assert "pw-secret" not in json.dumps(snap)
    assert (snap["requests"], snap["failures"]) == (0, 0)  # probes are not requests


async def test_down_then_one_trial_after_the_backoff_then_up_again(
    stand_in: StandIn, session: aiohttp.ClientSession
) -> None:
    clock = Clock()
    (host,) = hosts({"url": stand_in.url, "kind": "openai"})
    policy = BreakerPolicy(backoff=5.0, backoff_max=60.0)
    monitor = FleetMonitor([host], session, policy=policy, clock=clock)
    stand_in.status = 503
    await monitor.refresh_all()
    assert monitor.breaker(host.name).state == "down"
    assert monitor.status(host.name) is not None
    assert "HTTP 503" in (monitor.status(host.name).error or "")  # type: ignore[union-attr]
    probes = len(stand_in.seen)
    clock.now += 4.9
    assert await monitor.refresh(host.name) is None  # within the backoff: nothing is sent
    assert len(stand_in.seen) == probes
    clock.now += 0.1
    await monitor.refresh_all()  # the one half-open trial: fails
    assert len(stand_in.seen) == probes + 1
    assert monitor.breaker(host.name).state == "down"
    assert monitor.breaker(host.name).retry_in() == 10.0
    stand_in.status = 200
    clock.now += 10
    await monitor.refresh_all()
    assert monitor.breaker(host.name).state == "up"
    assert monitor.hosts_for("Qwen/Qwen3-8B") == [host]


async def test_a_failed_probe_keeps_the_last_known_models(stand_in: StandIn, session: aiohttp.ClientSession) -> None:
    (host,) = hosts({"url": stand_in.url, "kind": "openai"})
    monitor = FleetMonitor([host], session, policy=BreakerPolicy(failure_threshold=2))
    await monitor.refresh_all()
    stand_in.status = 500
    await monitor.refresh_all()
    status = monitor.status(host.name)
    assert status is not None and not status.ok
    assert "Qwen/Qwen3-8B:latest" in status.installed
    assert monitor.hosts_for("Qwen/Qwen3-8B") == [host]  # one failure under a threshold of two: still up


@pytest.mark.parametrize(
    ("script", "needle"),
    [
        ({"body": b"not json"}, "not JSON"),
        ({"body": b'{"something": "else"}'}, "unexpected answer"),
        ({"body": b"x" * 300}, "an answer of 300 bytes, over the 256 bytes allowed"),
        ({"body": b"x" * 300, "chunked": True}, "an answer over the 256 bytes allowed"),
        ({"hang": True}, "no answer to the probe within 0.2 s"),
    ],
)
async def test_a_bad_or_slow_answer_is_a_failed_probe(
    stand_in: StandIn,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    script: dict[str, Any],
    needle: str,
) -> None:
    monkeypatch.setattr(prober, "MAX_PROBE_BYTES", 256)
    for key, value in script.items():
        setattr(stand_in, key, value)
    (host,) = hosts({"url": stand_in.url, "kind": "openai"})
    status = await probe_host(session, host, within=0.2)
    assert not status.ok
    assert status.error is not None and needle in status.error


class FailingSession:
    """A session whose every request fails with an error quoting its URL and headers (as a careless library's
    error might)."""

    def get(self, url: str, **kwargs: Any) -> Any:
        raise aiohttp.ClientError(f"cannot request {url} with {kwargs.get('headers')}")


@pytest.mark.parametrize(
    "entry",
    [
        {"url": "http://127.0.0.1:9", "kind": "openai", "api_key": SECRET},
        {"url": f"http://user:{SECRET}@127.0.0.1:9", "kind": "ollama"},
    ],
)
async def test_a_probe_error_never_carries_the_key_or_the_url_password(entry: dict[str, Any]) -> None:
    (host,) = hosts(entry)
    status = await probe_host(FailingSession(), host)  # type: ignore[arg-type]
    assert not status.ok and status.error is not None
    assert "cannot request" in status.error and "***" in status.error
    assert SECRET not in status.error


async def test_refresh_all_probes_every_host_at_most_concurrency_at_once(
    stand_in: StandIn, session: aiohttp.ClientSession
) -> None:
    fleet = hosts(*({"url": f"{stand_in.url}/h{i}", "kind": "openai"} for i in range(4)))
    monitor = FleetMonitor(fleet, session, concurrency=1)
    await monitor.refresh_all()
    assert sorted(path for path, _ in stand_in.seen) == [f"/h{i}/v1/models" for i in range(4)]
    assert stand_in.most_in_flight == 1
    assert all(monitor.status(host.name) is not None for host in fleet)


async def test_the_monitor_task_refreshes_until_stopped(stand_in: StandIn, session: aiohttp.ClientSession) -> None:
    (host,) = hosts({"url": stand_in.url, "kind": "openai"})
    monitor = FleetMonitor([host], session)
    rounds: list[int] = []
    monitor.start(0.05, lambda: rounds.append(len(stand_in.seen)))
    with pytest.raises(RuntimeError):
        monitor.start(0.05)
    await eventually(lambda: len(stand_in.seen) >= 2, "two rounds of probes")
    await eventually(lambda: len(rounds) >= 2, "the callback after each round")
    assert rounds[:2] == [1, 2], "called after each round's probes"
    await monitor.stop()
    after = len(stand_in.seen)
    await monitor.refresh_all()  # still usable by hand once the task is gone
    assert len(stand_in.seen) == after + 1
    assert monitor.hosts_for("smollm2:135m") == [host]
