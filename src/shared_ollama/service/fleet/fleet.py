"""The fleet as the service uses it: hosts from the settings, their clients, the monitor, and what the scheduler
and the health view ask of them.

``Fleet.from_settings`` returns None without a fleet configured (``engines_file`` / ``engine_urls``): the service
then runs its one engine as before (a fleet of one, the scheduler's implicit host). With one, ``start`` probes
every host once (a host never probed serves only its configured models) and then every health interval, poking
the scheduler after each round so requests waiting for a host that came back start at once.

Which host has a model loaded comes from the last probe, and also from the requests this gateway started there
since (``started``): a model a request just loaded counts as warm on its host before the next probe says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import orjson

from shared_ollama.backends.client import EngineClient
from shared_ollama.backends.openai_host import OpenAIHostClient
from shared_ollama.backends.supervisor import EngineState
from shared_ollama.errors import BackendError, BackendUnavailable, InvalidRequest
from shared_ollama.protocol.names import canonical_model
from shared_ollama.protocol.upstream_openai_pass import PassThrough
from shared_ollama.service.admission import placement
from shared_ollama.service.admission.placement import LOCAL_HOST
from shared_ollama.service.fleet.config import Host, load_fleet_config, parse_engine_urls
from shared_ollama.service.fleet.health import BreakerPolicy
from shared_ollama.service.fleet.prober import FleetMonitor
from shared_ollama.service.fleet.routing import FleetClient, HostClient, is_load, loaded_answer
from shared_ollama.service.observability.metrics import HostFigures
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)
JsonDict = dict[str, Any]

HOST_HEADER = "X-Shared-Ollama-Engine-Host"
"""Response header naming the engine host that answered a request (fleet mode)."""
DROPPED_HEADER = "X-Shared-Ollama-Dropped-Options"
"""Response header naming the request's options an ``openai`` host has no equivalent for (not sent)."""


def configured_hosts(settings: Settings) -> tuple[Host, ...] | None:
    """The fleet's hosts from the settings; None when no fleet is configured. A bad file stops the start."""
    if settings.engines_file is not None:
        return load_fleet_config(settings.engines_file, default_slots=settings.slots)
    if settings.engine_urls:
        return parse_engine_urls(settings.engine_urls, default_slots=settings.slots)
    return None


@dataclass
class Fleet:
    """The configured engine hosts, their clients and health, for one gateway process."""

    settings: Settings
    monitor: FleetMonitor
    clients: dict[str, HostClient]
    sessions: list[aiohttp.ClientSession]
    """The openai hosts' pool and the probes' pool (closed by ``stop``)."""
    client: FleetClient
    on_change: Callable[[], None] = field(default=lambda: None)
    """Called after every probe round (the scheduler's ``poke``)."""
    _started: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Fleet | None:
        hosts = configured_hosts(settings)
        if hosts is None:
            return None
        timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.engine_connect_timeout, sock_read=settings.engine_request_timeout
        )
        # The openai hosts' requests and the probes each have their own pool: long streams never hold up a probe.
        slots = sum(h.slots for h in hosts if h.kind == "openai")
        session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=max(100, 2 * slots)))
        probes = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2 * len(hosts) + 8))
        policy = BreakerPolicy(backoff=1.0, backoff_max=max(1.0, settings.engine_restart_backoff_max))
        monitor = FleetMonitor(hosts, probes, policy=policy, probe_timeout=settings.engine_probe_timeout)
        clients: dict[str, HostClient] = {}
        for host in hosts:
            if host.kind == "openai":
                clients[host.name] = OpenAIHostClient(host.url, host.api_key, session)
            else:
                breaker = monitor.breaker(host.name)
                clients[host.name] = EngineClient(
                    host.url, settings, is_available=lambda b=breaker: b.available, token=partial(_key, host)
                )
        client = FleetClient(monitor, clients, settings.data_dir / "tmp", list_timeout=settings.engine_probe_timeout)
        return cls(settings, monitor, clients, [session, probes], client)

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        for client in self.clients.values():
            if isinstance(client, EngineClient):
                await client.open()
        await self.monitor.refresh_all()
        up = [h.name for h in self.monitor.hosts if self.monitor.breaker(h.name).available]
        log.info("engine fleet: %d hosts, up: %s", len(self.monitor.hosts), ", ".join(up) or "none")
        self.monitor.start(self.settings.engine_health_interval, self._probed)

    def _probed(self) -> None:
        """After a probe round: what it saw replaces what this gateway started meanwhile; tell the scheduler."""
        for name in self._started:
            self._started[name].clear()
        self.on_change()

    async def stop(self) -> None:
        await self.monitor.stop()
        for client in self.clients.values():
            if isinstance(client, EngineClient):
                await client.close()
        for session in self.sessions:
            await session.close()

    # ------------------------------------------------------------------ the scheduler's questions

    def placement_hosts(self) -> list[placement.Host]:
        return [
            placement.Host(
                host.name,
                host.slots,
                serves=partial(self.monitor.serves, host.name),
                is_warm=partial(self.is_warm, host.name),
                available=partial(self._available, host.name),
                weight=host.weight,
            )
            for host in self.monitor.hosts
        ]

    def _available(self, name: str) -> bool:
        return self.monitor.breaker(name).available

    def is_warm(self, name: str, model: str) -> bool:
        return self.monitor.is_warm(name, model) or canonical_model(model) in self._started.get(name, ())

    def started(self, name: str, model: str) -> None:
        """A request for ``model`` started on host ``name``: the model is (being) loaded there."""
        self._started.setdefault(name, set()).add(canonical_model(model))

    def figures(self, running_on: Callable[[str], int]) -> list[HostFigures]:
        """Each host's figures for the metrics (``running_on``: the scheduler's requests running per host)."""
        out = []
        for host in self.monitor.hosts:
            breaker = self.monitor.breaker(host.name)
            up = breaker.available
            out.append(
                HostFigures(host.name, up, host.slots, running_on(host.name), breaker.requests, breaker.failures)
            )
        return out

    # ------------------------------------------------------------------ outcomes

    def succeeded(self, name: str) -> None:
        self.monitor.breaker(name).record_success()

    def fail_over(self, name: str, exc: BackendError | BackendUnavailable, *, retry: bool) -> bool:
        """After a request's engine call on host ``name`` failed before its first byte: when the host could not be
        reached or answered a 5xx, take it out (its circuit opens, so the next admission places the request
        elsewhere) and say whether to ``retry``; any other error (a 4xx, an unreadable answer) is the request's
        own, goes back to the client as it is, and leaves the host up."""
        if not isinstance(exc, BackendUnavailable) and (exc.upstream_status or 0) < 500:
            return False
        self.failed(name, exc.message)
        return retry

    def failed(self, name: str, error: str) -> None:
        """A request found host ``name`` failing: it is taken out, and the scheduler told (requests waiting for
        a model no host that is up serves any more end at once)."""
        self.monitor.breaker(name).record_failure(error)
        log.warning("engine host %s failed a request: %s", name, error)
        self.on_change()

    # ------------------------------------------------------------------ calls on the host a request was placed on

    def _prepared(self, name: str, body: JsonDict, headers: dict[str, str]) -> tuple[HostClient, JsonDict]:
        """The host's client and the body as that host takes it (an ``openai`` host's own model name)."""
        headers[HOST_HEADER] = name
        headers.pop(DROPPED_HEADER, None)  # from an earlier attempt on another host
        self.started(name, str(body["model"]))
        client = self.clients[name]
        if isinstance(client, OpenAIHostClient):
            upstream = self.monitor.upstream_name(name, str(body["model"]))
            if upstream != body["model"]:
                body = {**body, "model": upstream}
        return client, body

    async def request(
        self, name: str, path: str, body: JsonDict, headers: dict[str, str], passthrough: PassThrough | None = None
    ) -> bytes:
        """A non-streamed engine call on host ``name``; ``headers`` (the response's) get the host's name and,
        from an ``openai`` host, the options it had no equivalent for (and ``passthrough`` the host's own answer
        to a chat)."""
        client, body = self._prepared(name, body, headers)
        if not isinstance(client, OpenAIHostClient):
            return await client.request("POST", path, body)
        if is_load(path, body):  # it serves what it lists: nothing to load, and nothing to generate
            return orjson.dumps(loaded_answer(str(body["model"])))
        dropped: list[str] = []
        raw = await client.request("POST", path, body, dropped=dropped, passthrough=passthrough)
        _note_dropped(headers, dropped)
        return raw

    @asynccontextmanager
    async def stream(
        self, name: str, path: str, body: JsonDict, headers: dict[str, str], passthrough: PassThrough | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A streamed engine call on host ``name`` (see ``request``)."""
        client, body = self._prepared(name, body, headers)
        if not isinstance(client, OpenAIHostClient):
            async with client.stream(path, body) as lines:
                yield lines
            return
        if is_load(path, body):
            yield _lines([orjson.dumps(loaded_answer(str(body["model"]))) + b"\n"])
            return
        dropped: list[str] = []
        async with client.stream(path, body, dropped=dropped, passthrough=passthrough) as lines:
            _note_dropped(headers, dropped)
            yield lines


class FleetEngines:
    """What the service shows of "the engine" when it is a fleet (the supervisor's place): running while any host
    is up; it starts and restarts nothing."""

    restarts = 0
    token = None
    plan = None

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self.started_at = time.time()

    @property
    def state(self) -> EngineState:
        hosts = self._fleet.monitor.hosts
        return EngineState.RUNNING if any(self._fleet._available(h.name) for h in hosts) else EngineState.DOWN

    def is_available(self) -> bool:
        return self.state == EngineState.RUNNING

    def snapshot(self) -> dict[str, Any]:
        hosts = self._fleet.monitor.hosts
        up = [h.name for h in hosts if self._fleet._available(h.name)]
        down = [h.name for h in hosts if h.name not in up]
        return {
            "state": self.state.value,
            "kind": "fleet",
            "managed": False,
            "hosts": len(hosts),
            "hosts_up": len(up),
            "restarts": 0,
            "last_error": f"engine hosts down: {', '.join(down)}" if down else None,
        }

    async def stop(self) -> None:
        await self._fleet.stop()


def check_host(name: str, fleet: Fleet | None, param: str = "X-Shared-Ollama-Engine-Host") -> None:
    """Refuse a request that asks for an engine host that does not exist (400 naming the header or field)."""
    known = [h.name for h in fleet.monitor.hosts] if fleet is not None else [LOCAL_HOST]
    if name not in known:
        raise InvalidRequest(f"{param} names no engine host: '{name}' (the hosts: {', '.join(known)})", param=param)


def _key(host: Host) -> str | None:
    return host.api_key


async def _lines(lines: list[bytes]) -> AsyncIterator[bytes]:
    for line in lines:
        yield line


def _note_dropped(headers: dict[str, str], dropped: list[str]) -> None:
    if dropped:
        headers[DROPPED_HEADER] = ", ".join(sorted(set(dropped)))
